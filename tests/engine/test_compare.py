"""`noah compare`: the plan, the paired statistics, and a tiny comparison end to end with resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

import noah.engine.compare as compare_mod
from noah.cli import main
from noah.engine.compare import Arm, paired_stats, parse_settings, plan_runs
from noah.engine.recipes import resolve_config
from noah.errors import ConfigError, RunInterrupted


def _base(**overrides):
    return resolve_config("demo", None, {"model": "test_resnet", **overrides})


def test_parse_settings_reads_yaml_scalars_and_none():
    assert parse_settings(["kv-split=true,false", "key_ratio=0.5,0.125", "variant=none,a"]) == [
        ("kv_split", (True, False)), ("key_ratio", (0.5, 0.125)), ("variant", (None, "a"))]


@pytest.mark.parametrize(
    "texts,pattern",
    [
        (["attention"], r"--set 'attention': expected KEY=V1,V2,\.\.\. such as attention=positions,classes"),
        (["colour=red"], r"--set colour: not an option of noah train"),
        (["head=gap,noah"], r"--set head: a comparison keeps head fixed"),
        (["merge=sum", "merge=max"], r"--set merge is given twice"),
    ],
)
def test_bad_settings_are_one_line_errors(texts, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_settings(texts)


def test_plan_gives_each_head_only_the_settings_it_uses(tmp_path):
    base = _base(key_ratio=0.25)
    settings = parse_settings(["attention=positions,classes", "num_heads=2,4", "lr=0.001"])
    arms, runs = plan_runs(base, ["test_resnet"], ["gap", "noah", "csra"], settings, 2, tmp_path)
    labels = [arm.label for arm in arms]
    assert labels == [
        "gap lr=0.001",
        "noah attention=positions num_heads=2 lr=0.001", "noah attention=positions num_heads=4 lr=0.001",
        "noah attention=classes num_heads=2 lr=0.001", "noah attention=classes num_heads=4 lr=0.001",
        "csra lr=0.001",
    ]
    assert len(runs) == 2 * len(arms) and {r.seed for r in runs} == {0, 1}
    gap = next(r.config for r in runs if r.arm.head == "gap")
    assert gap.key_ratio is None and gap.num_heads is None and gap.attention is None  # not the gap head's business
    csra = next(r.config for r in runs if r.arm.head == "csra")
    assert csra.head_dropout is None and csra.key_ratio is None
    noah = [r.config for r in runs if r.arm.head == "noah"]
    assert {c.key_ratio for c in noah} == {0.25} and {c.attention for c in noah} == {"positions", "classes"}
    folders = [r.folder for r in runs]
    assert len(set(folders)) == len(folders) and all(f.parent == tmp_path / "runs" for f in folders)
    # a seed's runs differ only in their head settings: same seed, data and order for every head
    assert {r.config.seed for r in runs if r.seed == 1} == {1}


def test_plan_refuses_options_no_head_has(tmp_path):
    arms, runs = plan_runs(_base(), ["test_resnet"], ["noah"], parse_settings(["merge=none,max,none"]), 1, tmp_path)
    assert [a.label for a in arms] == ["noah merge=none", "noah merge=max"]
    # the default's runs are those of a comparison without --set, so they are reused between the two
    _, plain_runs = plan_runs(_base(), ["test_resnet"], ["noah"], [], 1, tmp_path)
    assert runs[0].folder == plain_runs[0].folder and runs[1].folder != plain_runs[0].folder
    with pytest.raises(ConfigError, match=r"--set csra_heads: none of the heads gap, noah has that option"):
        plan_runs(_base(), ["test_resnet"], ["gap", "noah"], parse_settings(["csra_heads=1,4"]), 1, tmp_path)
    with pytest.raises(ConfigError, match=r"--attention: none of the heads gap has that option"):
        plan_runs(_base(attention="classes"), ["test_resnet"], ["gap"], [], 1, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown head 'mlp'"):
        plan_runs(_base(), ["test_resnet"], ["gap", "mlp"], [], 1, tmp_path)


def test_paired_stats_is_the_paired_t_test():
    base = {0: 70.0, 1: 72.0, 2: 71.0, 3: 69.5}
    arm = {0: 71.0, 1: 72.5, 2: 73.0, 3: 69.0}
    p, wins, pairs = paired_stats(arm, base)
    diffs = [1.0, 0.5, 2.0, -0.5]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    t = mean / (sd / 2)  # the paired t statistic, by hand
    from scipy import stats

    assert p == pytest.approx(2 * stats.t.sf(abs(t), 3))  # two-sided, 3 degrees of freedom
    assert (wins, pairs) == (3, 4)
    assert paired_stats({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0}) == (None, 2, 2)  # constant differences: no test
    assert paired_stats({0: 1.0, 5: 2.0}, {0: 0.0}) == (None, 1, 1)  # one pair only


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_compare_end_to_end_with_reuse_and_resume(image_folder, tmp_path, tiny_args, capsys, monkeypatch):
    out = tmp_path / "cmp"
    argv = ["compare", "--heads", "gap,noah", "--seeds", "2", "--data", str(image_folder), "--epochs", "1",
            "--output", str(out), "--jobs", "1", *tiny_args]
    argv.remove("--quiet")

    # interrupted after its first run: the error says how to continue, the first run is complete
    real_train = compare_mod.train
    calls = []

    def stop_on_second(config, **kwargs):
        calls.append(config.seed)
        if len(calls) == 2:
            raise RunInterrupted("stopped by SIGTERM after epoch 1", 15)
        return real_train(config, **kwargs)

    monkeypatch.setattr(compare_mod, "train", stop_on_second)
    with pytest.raises(RunInterrupted, match="run the same noah compare command again") as stopped:
        compare_mod.run(compare_mod_args(argv))
    assert stopped.value.exit_status == 128 + 15
    monkeypatch.setattr(compare_mod, "train", real_train)
    finished = [p for p in (out / "runs").iterdir() if (p / "summary.json").is_file()]
    assert len(finished) == 1
    first_summary = (finished[0] / "summary.json").stat().st_mtime_ns

    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/4] test_resnet gap seed 0: top1" in printed and "(reused)" in printed and "ETA" in printed
    assert (finished[0] / "summary.json").stat().st_mtime_ns == first_summary  # reused, not retrained

    rows = _rows(out / "compare.csv")
    assert [(r["model"], r["head"], r["seeds_done"]) for r in rows] == [("test_resnet", "gap", "2"),
                                                                       ("test_resnet", "noah", "2")]
    for row, head in zip(rows, ("gap", "noah")):
        values = [json.loads((p / "summary.json").read_text())["metrics"]["top1"]
                  for p in sorted((out / "runs").glob(f"test_resnet-{head}-s*"))]
        assert [float(v) for v in row["top1_per_seed"].split()] == pytest.approx(values, abs=0.005)
        assert float(row["top1_mean"]) == pytest.approx(sum(values) / 2)
    assert float(rows[1]["gain"]) == pytest.approx(float(rows[1]["top1_mean"]) - float(rows[0]["top1_mean"]))
    assert int(rows[1]["params"]) > 0 and int(rows[0]["macs"]) > 0
    md = (out / "compare.md").read_text()
    assert "| test_resnet | noah |" in md and "Command: `noah compare --heads gap,noah" in md and "load average" in md

    # a run killed after its last checkpoint but before its final files continues from last.pt
    victim = sorted((out / "runs").glob("test_resnet-noah-s1-*"))[0]
    (victim / "summary.json").unlink()
    (victim / "model.safetensors").unlink()
    assert main(argv + ["--quiet"]) == 0
    assert (victim / "summary.json").is_file()
    assert len((victim / "metrics.jsonl").read_text().splitlines()) == 1  # the epoch was not trained again
    assert _rows(out / "compare.csv") == rows


def compare_mod_args(argv: list[str]):
    from noah.cli import build_parser

    return build_parser(only="compare").parse_args(argv)


def test_compare_refuses_single_model_and_head_flags(image_folder, tmp_path, capsys):
    assert main(["compare", "--head", "gap", "--data", str(image_folder), "--output", str(tmp_path)]) == 2
    assert "noah compare takes --heads (a comma-separated list, the first the baseline), not --head" in \
        capsys.readouterr().err


def test_arm_label():
    assert Arm("m", "noah", (("kv_split", False), ("variant", None))).label == "noah kv_split=False variant=none"


def test_a_stop_request_in_a_run_stops_the_enclosing_block_too():
    """noah compare wraps each noah train in its own StopSignals: a SIGTERM that reached the run
    (even one that then finished normally) must stop the comparison after that run."""
    import os
    import signal

    from noah.engine.preemption import StopSignals

    with StopSignals() as outer:
        with StopSignals() as inner:
            os.kill(os.getpid(), signal.SIGTERM)
        assert inner.requested and outer.requested and outer.name == "SIGTERM"
    with StopSignals() as alone:
        pass
    assert not alone.requested
