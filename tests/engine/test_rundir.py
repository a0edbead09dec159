"""The run folder: refuses to mix runs, one process at a time, atomic writes, one-line disk errors."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from noah.engine import rundir as rundir_module
from noah.engine.config import TrainConfig
from noah.engine.rundir import RunDir
from noah.errors import CheckpointError, RunFolderError


def _checkpoint(epoch: int, step: int = 0) -> dict:
    return {"epoch": epoch, "step": step, "config": TrainConfig().to_dict(), "model": {}}


def test_a_folder_holding_a_run_is_refused_unless_continuing_or_overwriting(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    assert run_dir.claim(continuing=False, overwrite=False) == []
    run_dir.write_config(TrainConfig())
    run_dir.save_checkpoint(_checkpoint(1))
    (run_dir.root / "notes.txt").write_text("mine")
    run_dir.release()

    with pytest.raises(RunFolderError) as info:
        RunDir(run_dir.root).claim(continuing=False, overwrite=False)
    message = str(info.value)
    assert str(run_dir.root) in message and "--resume" in message and "--overwrite" in message
    assert "config.yaml" in message and "last.pt" in message and "\n" not in message

    again = RunDir(run_dir.root)
    assert again.claim(continuing=True, overwrite=False) == []
    again.release()
    replaced = RunDir(run_dir.root)
    notes = replaced.claim(continuing=False, overwrite=True)
    assert notes and "removed" in notes[0]
    assert replaced.run_files() == [] and (run_dir.root / "notes.txt").read_text() == "mine"
    replaced.release()


_HOLDER = """
import os, sys, time
sys.path.insert(0, {src!r})
from noah.engine.rundir import RunDir
run_dir = RunDir({root!r})
run_dir.claim(continuing=False, overwrite=False)
if {fork}:
    if os.fork() == 0:  # a child (like a DataLoader worker) that outlives its parent
        time.sleep(60)
        os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


def _hold(root: Path, fork: bool = False) -> subprocess.Popen:
    src = str(Path(rundir_module.__file__).parents[2])
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLDER.format(src=src, root=str(root), fork=fork))],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_process_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "run"
    holder = _hold(root, fork=True)
    try:
        with pytest.raises(RunFolderError, match=f"is in use by process {holder.pid} on "):
            RunDir(root).claim(continuing=False, overwrite=False)
        holder.kill()  # SIGKILL: no release; its forked child lives on
        holder.wait()
        deadline = time.monotonic() + 10
        while True:
            try:
                notes = RunDir(root).claim(continuing=False, overwrite=False)
                break
            except RunFolderError:
                assert time.monotonic() < deadline, "the dead holder's lock was never released"
                time.sleep(0.05)
        assert notes == [f"taking over the lock of process {holder.pid} on {os.uname().nodename} "
                         f"(since {notes[0].split('(since ')[1].split(')')[0]}), which ended without releasing it"]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)


@pytest.mark.parametrize("code,text", [(errno.ENOSPC, "No space left on device"), (errno.EIO, "Input/output error"),
                                       (errno.EACCES, "Permission denied")])
def test_a_failed_write_is_one_line_leaves_no_partial_file_and_names_the_intact_checkpoint(
        tmp_path: Path, monkeypatch, code: int, text: str) -> None:
    run_dir = RunDir(tmp_path / "run")
    run_dir.claim(continuing=False, overwrite=False)
    run_dir.save_checkpoint(_checkpoint(1))
    before = hashlib.sha256(run_dir.file(RunDir.LAST).read_bytes()).hexdigest()
    real = rundir_module.write_checkpoint

    def failing(state, file):  # torch.save wraps the failed write in a RuntimeError, as on a full disk
        real(state, file)
        try:
            raise OSError(code, os.strerror(code))
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from exc

    monkeypatch.setattr(rundir_module, "write_checkpoint", failing)
    with pytest.raises(RunFolderError) as info:
        run_dir.save_checkpoint(_checkpoint(2))
    message = str(info.value)
    assert message == f"cannot write {run_dir.file(RunDir.LAST)}: {text}; {run_dir.file(RunDir.LAST)} (epoch 1) is intact"
    assert hashlib.sha256(run_dir.file(RunDir.LAST).read_bytes()).hexdigest() == before
    assert sorted(p.name for p in run_dir.root.iterdir()) == [".lock", "last.pt"]
    run_dir.release()


def test_metrics_lines_append_and_trim(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.claim(continuing=False, overwrite=False)
    for epoch in (1, 2, 3):
        run_dir.append_metrics({"epoch": epoch, "val": {"top1": float(epoch)}})
    run_dir.trim_metrics(2)
    assert [r["epoch"] for r in run_dir.read_metrics()] == [1, 2]
    run_dir.file(RunDir.METRICS).write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(CheckpointError, match="metrics.jsonl line 2 is not JSON"):
        run_dir.read_metrics()
    run_dir.release()


def test_reading_a_run_folder(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(CheckpointError, match="run folder not found"):
        run_dir.read_config()
    run_dir.claim(continuing=False, overwrite=False)
    with pytest.raises(CheckpointError, match="is not a noah run folder: config.yaml is missing"):
        run_dir.read_config()
    config = TrainConfig(model="test_vit", scale=(0.5, 1.0))
    run_dir.write_config(config)
    run_dir.write_classes("multilabel", ["x", "y"])
    assert run_dir.read_config() == config and run_dir.read_classes() == ("multilabel", ["x", "y"])
    run_dir.save_checkpoint(_checkpoint(3), best=True)
    assert run_dir.weights_file() == run_dir.file(RunDir.BEST)  # no final weights yet
    assert run_dir.weights_file("last") == run_dir.file(RunDir.LAST)
    assert run_dir.last_checkpoint()["epoch"] == 3
    with pytest.raises(CheckpointError, match="looked for model.safetensors"):
        run_dir.weights_file("final")
    run_dir.release()
