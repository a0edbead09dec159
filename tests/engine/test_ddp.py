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


def _rank_first_worker(rank: int, init_file: str, results: str) -> None:
    import torch.distributed as dist

    from noah.engine.distributed import DistEnv, main_rank_first
    from noah.errors import DataError

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    env = DistEnv(rank=rank, world_size=2)
    calls = []

    def fails_on_rank_0():
        calls.append(rank)
        if rank == 0:
            raise DataError("cannot generate the data")
        return "made"

    try:
        main_rank_first(fails_on_rank_0, env)
        outcome = "returned"
    except DataError as exc:
        outcome = f"DataError: {exc}"
    ok = main_rank_first(lambda: f"ok {rank}", env)
    with open(f"{results}.{rank}", "w") as f:
        f.write(f"{outcome}|{calls}|{ok}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_rank_instead_of_hanging(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_rank_first_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2,
                             join=False, start_method="spawn")
    for process in ctx.processes:
        process.join(timeout=120)
    hung = [p for p in ctx.processes if p.is_alive()]
    for process in hung:
        process.terminate()
    assert not hung, "a rank was left waiting"
    assert all(p.exitcode == 0 for p in ctx.processes), [p.exitcode for p in ctx.processes]
    rank0 = (tmp_path / "out.0").read_text()
    rank1 = (tmp_path / "out.1").read_text()
    assert rank0 == "DataError: cannot generate the data|[0]|ok 0"
    assert rank1 == "DataError: cannot generate the data|[]|ok 1"  # rank 1 never ran it
