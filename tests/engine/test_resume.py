"""Resuming: a seeded deterministic CPU run stopped anywhere -- killed with SIGKILL, or asked to
stop mid-epoch with SIGTERM -- and resumed ends with weights bitwise equal to an uninterrupted run,
whatever the number of DataLoader workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import noah.engine.train as train_mod
from noah.cli import main
from noah.engine.checkpoint import load_checkpoint

# dropout and augmentation make the run consume randomness every step, so a replay that
# re-seeded wrongly would show up in the weights; 18 images at batch 4 are 4 steps per epoch
_RUN = ["--epochs", "3", "--seed", "7", "--deterministic", "--head-dropout", "0.2", "--color-jitter", "0.3",
        "--sched", "cosine", "--warmup-epochs", "1", "--model", "test_resnet", "--image-size", "64", "--batch-size", "4",
        "--quiet", "--device", "cpu", "--amp", "none"]


def _args(data: Path, out: Path, workers: int) -> list[str]:
    return ["train", "--data", str(data), "--output", str(out), "--workers", str(workers), *_RUN]


@pytest.fixture(scope="module")
def reference(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted run (no DataLoader workers)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_args(image_folder, out, workers=0)) == 0
    return load_file(out / "model.safetensors")


def _assert_same_weights(reference: dict[str, torch.Tensor], out: Path) -> None:
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == reference.keys()
    unequal = [k for k in weights if not torch.equal(weights[k], reference[k])]
    assert not unequal, f"tensors differ after resume: {unequal[:5]}"
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_stops_cleanly_and_resumes_bitwise(image_folder: Path, tmp_path: Path, reference, workers,
                                                             monkeypatch, capsys) -> None:
    real_build = train_mod.build_criterion
    calls = {"n": 0}

    def criterion_that_gets_a_sigterm(*args, **kwargs):
        inner = real_build(*args, **kwargs)

        def criterion(output, target):
            calls["n"] += 1
            if calls["n"] == 6:  # epoch 2, batch 2: as if the scheduler sent it during this step
                os.kill(os.getpid(), signal.SIGTERM)
            return inner(output, target)

        return criterion

    out = tmp_path / "run"
    monkeypatch.setattr(train_mod, "build_criterion", criterion_that_gets_a_sigterm)
    assert main(_args(image_folder, out, workers)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip()
    assert err == (f"noah train: stopped by SIGTERM in epoch 2 after batch 2/4; {out / 'last.pt'} holds that point: "
                   f"continue with --output {out} --resume auto")
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run

    monkeypatch.setattr(train_mod, "build_criterion", real_build)
    assert main([*_args(image_folder, out, workers), "--resume", "auto"]) == 0
    assert "in epoch 2 after batch 2/4" in capsys.readouterr().out
    _assert_same_weights(reference, out)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers(image_folder: Path, tmp_path: Path, reference) -> None:
    """As a cluster scheduler does it: SIGTERM to the trainer and its DataLoader workers at once."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "noah", *_args(image_folder, out, workers=2)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert len(err.strip().splitlines()) == 1 and "stopped by SIGTERM" in err and "Traceback" not in err
    assert main([*_args(image_folder, out, workers=2), "--resume", "auto"]) == 0
    _assert_same_weights(reference, out)


@pytest.mark.slow
def test_sigkill_then_resume_auto_matches_uninterrupted(image_folder: Path, tmp_path: Path, reference) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "noah", *_args(image_folder, killed, workers=0)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (killed / "last.pt").exists():
            assert proc.poll() is None, "training ended before writing its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    interrupted_at = load_checkpoint(killed / "last.pt")["epoch"]
    assert 1 <= interrupted_at < 3

    assert main([*_args(image_folder, killed, workers=0), "--resume", "auto"]) == 0  # takes over the dead lock
    _assert_same_weights(reference, killed)


@pytest.mark.slow
def test_resume_auto_without_checkpoint_starts_fresh_and_finished_run_is_kept(image_folder: Path, tmp_path: Path,
                                                                               tiny_args, run_noah) -> None:
    out = tmp_path / "fresh"
    args = ["train", "--data", str(image_folder), "--output", str(out), "--epochs", "1", "--resume", "auto", *tiny_args]
    first = run_noah(args, timeout=300)
    assert first.returncode == 0, first.stderr
    before = load_file(out / "model.safetensors")
    again = run_noah(args, timeout=300)  # nothing left to train: same weights, summary rewritten
    assert again.returncode == 0, again.stderr
    after = load_file(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_errors_are_one_line(image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    assert main(["train", "--data", str(image_folder), "--resume", "auto", *tiny_args]) == 2
    assert "--resume auto needs --output" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train", "--data", str(image_folder), "--resume", str(bad), "--output", str(tmp_path / "o"),
                 *tiny_args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err
