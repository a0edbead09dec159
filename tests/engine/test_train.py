"""`noah train` / `noah eval` / `noah predict` end to end on tiny folders, in-process."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import noah.engine.train as train_mod
from noah.cli import main
from noah.engine import rundir as rundir_module
from noah.engine.checkpoint import load_checkpoint
from noah.engine.rundir import RunDir

RUN_FILES = ("config.yaml", "classes.json", "metrics.jsonl", "last.pt", "best.pt", "model.safetensors", "summary.json")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("head", ["noah", "gap"])
def test_multiclass_run_writes_everything(head: str, image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--data", str(image_folder), "--head", head, "--epochs", "2", "--output", str(out), *tiny_args])
    assert rc == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, ".lock"])  # no temporary files left
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multiclass" and summary["head"] == head and summary["epochs"] == 2
    assert set(summary["metrics"]) >= {"top1", "top3"}  # 3 classes: top-5 is capped at top-3
    assert summary["metrics"]["samples"] == 9
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["head"] == head and config["model"] == "test_resnet" and config["recipe"] == "demo"
    assert json.loads((out / "classes.json").read_text()) == {"task": "multiclass", "class_names": ["c0", "c1", "c2"]}
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 0 and {"optimizer", "scheduler", "rng", "model"} <= set(last)
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in last["model"].items())
    printed = capsys.readouterr().out
    assert "top1" in printed and str(out) in printed

    # the same weights evaluate to the same numbers through `noah eval`
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--json", "--device", "cpu", "--workers", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["top1"] == pytest.approx(summary["metrics"]["top1"])
    assert evaluated["metrics"]["samples"] == 9

    image = image_folder / "val" / "c1" / "0.png"
    assert main(["predict", str(image), "--run", str(out), "--top-k", "2", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["image"] == str(image) and len(pred["predictions"]) == 2
    scores = [p["score"] for p in pred["predictions"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {p["class"] for p in pred["predictions"]} <= {"c0", "c1", "c2"}


def test_multilabel_coco_run(coco_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--data", str(coco_folder), "--epochs", "1", "--output", str(out), *tiny_args])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multilabel"
    assert list(summary["metrics"])[:7] == ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]
    m = summary["metrics"]
    assert m["samples"] == 7
    if m["CP"] + m["CR"] > 0:
        assert m["CF1"] == pytest.approx(2 * m["CP"] * m["CR"] / (m["CP"] + m["CR"]))
    capsys.readouterr()
    image = next((coco_folder / "val").iterdir())
    assert main(["predict", str(image), "--run", str(out), "--threshold", "0.01", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert all(p["score"] >= 0.01 for p in pred["predictions"])


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != ".lock"}


def test_a_second_run_into_the_same_folder_is_refused_then_overwrite_replaces_it(
        image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(image_folder), "--epochs", "1", "--output", str(out), *tiny_args]
    assert main(args) == 0
    before = _hashes(out)
    capsys.readouterr()
    assert main([*args, "--lr", "0.5"]) == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "--resume auto" in err and "--overwrite" in err
    assert _hashes(out) == before  # nothing touched
    assert main([*args, "--resume", "auto", "--overwrite"]) == 2
    assert "contradict" in _one_line_error(capsys)
    assert main([*args, "--overwrite", "--epochs", "2"]) == 0
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resuming_with_another_model_names_what_differs(image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(image_folder), "--epochs", "2", "--output", str(out), *tiny_args]
    assert main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "auto", "--model", "test_efficientnet", "--num-heads", "2"]) == 2
    err = _one_line_error(capsys)
    assert "checkpoint has model test_resnet, this run asks for test_efficientnet" in err
    assert "checkpoint has num_heads None, this run asks for 2" in err
    assert main([*args, "--resume", "auto", "--lr", "0.01"]) == 0  # a training setting may change
    assert "settings changed since the checkpoint: epochs 1 -> 2, lr 0.002 -> 0.01\n" in capsys.readouterr().out


def test_a_full_disk_mid_run_is_one_line_naming_the_intact_checkpoint(
        image_folder: Path, tmp_path: Path, tiny_args, monkeypatch, capsys) -> None:
    real = rundir_module.write_checkpoint

    def disk_full_at_epoch_2(state, file):
        if state["epoch"] == 2:
            file.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(state, file)

    monkeypatch.setattr(rundir_module, "write_checkpoint", disk_full_at_epoch_2)
    out = tmp_path / "run"
    assert main(["train", "--data", str(image_folder), "--epochs", "3", "--output", str(out), *tiny_args]) == 2
    err = _one_line_error(capsys)
    assert err == (f"noah train: error: cannot write {out / 'last.pt'}: No space left on device; "
                   f"{out / 'last.pt'} (epoch 1) is intact")
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(rundir_module, "write_checkpoint", real)  # space freed: the run continues
    capsys.readouterr()
    assert main(["train", "--data", str(image_folder), "--epochs", "3", "--output", str(out), "--resume", "auto",
                 *tiny_args]) == 0
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(image_folder: Path, tmp_path: Path, tiny_args, monkeypatch,
                                                         capsys) -> None:
    """Epoch 1 trains normally; the loss turns NaN in epoch 2: exit 2, last.pt stays epoch 1's."""
    calls = {"n": 0}
    real_build = train_mod.build_criterion

    def poisoned_criterion(*args, **kwargs):
        inner = real_build(*args, **kwargs)

        def criterion(output, target):
            calls["n"] += 1
            loss = inner(output, target)
            return loss * float("nan") if calls["n"] > 4 else loss  # 18 images / batch 4: 4 steps per epoch

        return criterion

    written = {}
    real_save = RunDir.save_checkpoint

    def recording_save(self, state, best=False):
        real_save(self, state, best)
        written["last.pt"] = hashlib.sha256(self.file(RunDir.LAST).read_bytes()).hexdigest()

    monkeypatch.setattr(train_mod, "build_criterion", poisoned_criterion)
    monkeypatch.setattr(RunDir, "save_checkpoint", recording_save)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(image_folder), "--epochs", "3", "--output", str(out), *tiny_args])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "nan" in err and "epoch 2" in err
    assert hashlib.sha256((out / "last.pt").read_bytes()).hexdigest() == written["last.pt"]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()


def test_a_setting_the_backbone_cannot_take_is_refused_before_anything_runs(tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", *tiny_args, "--model", "test_vit", "--output-stride", "8", "--output", str(out)]
    assert main(args) == 2
    assert "model test_vit cannot take --output-stride 8" in _one_line_error(capsys)
    assert not out.exists() or RunDir(out).run_files() == []


@pytest.mark.parametrize("data,task,metric", [("digits", "multiclass", "top1"), ("digits-multilabel", "multilabel", "mAP")])
def test_builtin_digit_scenes_train_through_the_file_loaders(data, task, metric, tmp_path, tiny_args, monkeypatch, capsys):
    monkeypatch.setenv("NOAH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train", "--data", data, "--data-size", "10", "6", "--epochs", "1", "--output", str(out), *tiny_args]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and metric in summary["metrics"] and summary["num_classes"] == 10
    generated = list((tmp_path / "cache").iterdir())
    assert len(generated) == 1 and (generated[0] / "info.json").is_file()
    assert any(generated[0].rglob("*.png"))
