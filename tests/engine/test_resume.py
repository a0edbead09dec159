"""Killed with SIGKILL mid-run and resumed, a seeded deterministic CPU run ends bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from noah.engine.checkpoint import load_checkpoint


def _train_args(data: Path, out: Path, tiny_args: list[str]) -> list[str]:
    # dropout and augmentation make the run consume randomness every step, so a replay that
    # re-seeded wrongly would show up in the weights
    return ["train", "--data", str(data), "--output", str(out), "--epochs", "3", "--seed", "7", "--deterministic",
            "--head-dropout", "0.2", "--color-jitter", "0.3", "--sched", "cosine", "--warmup-epochs", "1", *tiny_args]


@pytest.mark.slow
def test_sigkill_then_resume_auto_matches_uninterrupted(image_folder: Path, tmp_path: Path, tiny_args, run_noah) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = run_noah(_train_args(image_folder, full, tiny_args), timeout=300)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen([sys.executable, "-m", "noah", *_train_args(image_folder, killed, tiny_args)],
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

    resumed = run_noah([*_train_args(image_folder, killed, tiny_args), "--resume", "auto"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"tensors differ after resume: {unequal[:5]}"
    epochs = [line for line in (killed / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(epochs) == 3


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


def test_resume_errors_are_one_line(image_folder: Path, tmp_path: Path, tiny_args) -> None:
    from noah.cli import main

    assert main(["train", "--data", str(image_folder), "--resume", "auto", *tiny_args]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train", "--data", str(image_folder), "--resume", str(bad), "--output", str(tmp_path / "o"),
                 *tiny_args]) == 2
