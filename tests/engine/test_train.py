"""`noah train` / `noah eval` / `noah predict` end to end on tiny folders, in-process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import noah.engine.train as train_mod
from noah.cli import main
from noah.engine.checkpoint import load_checkpoint

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "model.safetensors", "summary.json")


@pytest.mark.parametrize("head", ["noah", "gap"])
def test_multiclass_run_writes_everything(head: str, image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--data", str(image_folder), "--head", head, "--epochs", "2", "--output", str(out), *tiny_args])
    assert rc == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multiclass" and summary["head"] == head and summary["epochs"] == 2
    assert set(summary["metrics"]) >= {"top1", "top3"}  # 3 classes: top-5 is capped at top-3
    assert summary["metrics"]["samples"] == 9
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["head"] == head and config["model"] == "test_resnet" and config["recipe"] == "demo"
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and {"optimizer", "scheduler", "rng", "model"} <= set(last)
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in last["model"].items())
    printed = capsys.readouterr().out
    assert "top1" in printed and str(out) in printed

    # the same weights evaluate to the same numbers through `noah eval`
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--json", "--device", "cpu"]) == 0
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
    real_save = train_mod.save_checkpoint

    def recording_save(state, path):
        real_save(state, path)
        written[Path(path).name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()

    monkeypatch.setattr(train_mod, "build_criterion", poisoned_criterion)
    monkeypatch.setattr(train_mod, "save_checkpoint", recording_save)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(image_folder), "--epochs", "3", "--output", str(out), *tiny_args])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nan" in err and "epoch 2" in err
    assert hashlib.sha256((out / "last.pt").read_bytes()).hexdigest() == written["last.pt"]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()


def test_pretrained_official_checkpoint_with_other_class_count(tmp_path: Path) -> None:
    """An official-format checkpoint (DDP ``module.`` keys under ``state_dict``) for 7 classes
    fine-tunes a 3-class model: backbone loaded, head left fresh."""
    import noah
    from noah.engine.builders import load_pretrained

    source = noah.create_model("test_resnet", num_classes=7)
    official = {"epoch": 3, "state_dict": {f"module.{k.removeprefix('backbone.')}": v
                                           for k, v in source.state_dict().items()}}
    path = tmp_path / "official.pth.tar"
    torch.save(official, path)
    target = noah.create_model("test_resnet", num_classes=3)
    fresh_head = {k: v.clone() for k, v in target.head.state_dict().items()}
    message = load_pretrained(target, str(path))
    assert "head newly initialised" in message
    for k, v in target.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, source.state_dict()[k]), k
    assert all(torch.equal(v, fresh_head[k]) for k, v in target.head.state_dict().items())


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
