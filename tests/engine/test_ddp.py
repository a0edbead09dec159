"""Two CPU processes with gloo: DDP training, every validation sample counted exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noah.engine.distributed import ShardSampler


@pytest.mark.parametrize("length,world", [(9, 2), (10, 3), (2, 4), (0, 2)])
def test_shard_sampler_covers_each_index_once(length: int, world: int) -> None:
    shards = [list(ShardSampler(length, rank, world)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(length))
    assert [len(ShardSampler(length, r, world)) for r in range(world)] == [len(s) for s in shards]


@pytest.mark.slow
def test_torchrun_two_gloo_processes(image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "noah", "train",
           "--data", str(image_folder), "--epochs", "2", "--output", str(out), *tiny_args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    # 9 validation images on 2 ranks: a padding sampler would count 10
    assert summary["metrics"]["samples"] == 9
    assert done.stdout.count("NOAH run finished") == 1  # only rank 0 reports
    assert not list(out.glob("*.tmp"))

    # the sharded, gathered metrics equal a single-process evaluation of the same weights
    from noah.cli import main

    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--device", "cpu", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)["metrics"]
    for key in ("top1", "top3", "samples"):
        assert single[key] == pytest.approx(summary["metrics"][key])
    assert single["loss"] == pytest.approx(summary["metrics"]["loss"], rel=1e-4)
    assert torch.isfinite(torch.tensor(single["loss"]))
