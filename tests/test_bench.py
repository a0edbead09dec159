"""``noah benchmark``: argument handling, and tiny end-to-end runs of each mode (no timing checks)."""

from __future__ import annotations

import csv

import pytest
import torch

from noah.bench import DEFAULT_SHAPES, HeadShape, Timings, parse_shape, time_interleaved
from noah.cli import main
from noah.errors import ConfigError
from noah.head import cpu_kernel, cpu_train


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_parse_shape():
    assert parse_shape("512,1000,4,1/2,7,7") == HeadShape(512, 1000, 4, 0.5, 7, 7)
    assert parse_shape(" 1280, 1000, 8, 0.25, 7, 7 ") == HeadShape(1280, 1000, 8, 0.25, 7, 7)
    assert str(parse_shape("512,1000,4,1/2,7,7")) == "C=512 M=1000 N=4 r=1/2 7x7"
    assert [parse_shape(s)[0] for s in DEFAULT_SHAPES] == [512, 1280]


@pytest.mark.parametrize("text", ["512,1000,4,1/2,7", "a,1000,4,0.5,7,7", "512,1000,4,1/0,7,7", "512,0,4,0.5,7,7",
                                  "512,1000,3,0.5,7,7", "512,1000,4,1.5,7,7"])
def test_parse_shape_rejects_bad_input(text):
    with pytest.raises(ConfigError):
        parse_shape(text)


def test_interleaved_runs_alternate_their_order():
    calls = []
    t = time_interleaved({k: (lambda k=k: calls.append(k)) for k in "abc"}, warmup=1, repeats=3, device=torch.device("cpu"))
    # warm-up in order, then forward, reversed, forward: no function always follows the same one
    assert "".join(calls) == "abc" + "abc" + "cba" + "abc"
    assert all(len(t.samples[k]) == 3 for k in "abc")


def test_ratios_are_read_repeat_by_repeat():
    # the machine slows down over the run: b is always half of a in its own repeat, though the
    # ratio of the medians (6 / 2 = 3) says otherwise
    t = Timings({"a": [2.0, 4.0, 6.0, 8.0, 10.0], "b": [1.0, 2.0, 2.0, 4.0, 5.0]})
    assert t.median("a") == 6.0 and t.median("b") == 2.0
    assert t.ratios("a", "b") == [2.0, 2.0, 3.0, 2.0, 2.0]
    assert t.ratio("a", "b") == 2.0
    assert t.ratio_quartiles("a", "b") == (2.0, 2.0)
    spread = Timings({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, 1.0, 1.0, 1.0]})
    assert spread.ratio_quartiles("a", "b") == pytest.approx((1.75, 3.25))
    assert Timings({"a": [3.0], "b": [2.0]}).ratio_quartiles("a", "b") == (1.5, 1.5)


def test_head_only_writes_csv_and_markdown(tmp_path, capsys):
    code = main(["benchmark", "--head-only", "--shapes", "32,5,2,1/2,3,3", "24,3,1,1/4,2,2", "--head-batches", "1,2",
                 "--warmup", "0", "--repeats", "1", "--output", str(tmp_path)])
    assert code == 0
    rows = read_csv(tmp_path / "head_only.csv")
    assert [(r["shape"], r["batch"]) for r in rows] == [
        ("C=32 M=5 N=2 r=1/2 3x3", "1"), ("C=32 M=5 N=2 r=1/2 3x3", "2"),
        ("C=24 M=3 N=1 r=1/4 2x2", "1"), ("C=24 M=3 N=1 r=1/4 2x2", "2"),
    ]
    for row in rows:
        assert float(row["fast_vs_plain_rel_err"]) < 1e-5
        for key in ("floor_ms", "fast_ms", "plain_ms", "train_fast_ms", "train_plain_ms", "train_lean_ms"):
            assert float(row[key]) > 0
        # with the compiled kernel, the PyTorch-only fast path is timed beside it
        assert ("fast_torch_ms" in row) == cpu_kernel.fused_available()
    markdown = (tmp_path / "head_only.md").read_text()
    assert "| shape | batch | floor_ms |" in markdown and "torch" in markdown
    assert "NOAH head alone" in capsys.readouterr().out


def test_models_run_writes_csv_and_markdown(tmp_path):
    code = main(["benchmark", "--models", "resnet18", "--img-size", "64", "--batch-size", "2", "--num-classes", "10",
                 "--warmup", "0", "--repeats", "1", "--output", str(tmp_path)])
    assert code == 0
    (row,) = read_csv(tmp_path / "benchmark.csv")
    assert row["model"] == "resnet18"
    assert float(row["params_noah_M"]) > float(row["params_base_M"]) > 11
    assert float(row["macs_noah_G"]) > float(row["macs_base_G"]) > 0
    for key in ("lat_base_ms", "lat_noah_ms", "fps_base", "fps_noah", "speed_ratio"):
        assert float(row[key]) > 0
    assert "| resnet18 |" in (tmp_path / "benchmark.md").read_text()


def test_training_run_writes_csv_and_markdown(tmp_path):
    code = main(["benchmark", "--train", "--models", "resnet18", "--img-size", "64", "--batch-size", "2",
                 "--num-classes", "10", "--warmup", "0", "--repeats", "1", "--output", str(tmp_path)])
    assert code == 0
    (row,) = read_csv(tmp_path / "train.csv")
    assert row["model"] == "resnet18" and row["batch"] == "2"
    for key in ("step_base_ms", "step_noah_ms"):
        assert float(row[key]) > 0
    assert float(row["train_overhead_%"]) == pytest.approx((float(row["step_noah_ms"]) / float(row["step_base_ms"]) - 1) * 100, rel=1e-3)
    assert float(row["overhead_q1_%"]) <= float(row["train_overhead_%"]) <= float(row["overhead_q3_%"])
    # with the compiled training kernel, the NOAH model is also timed with it disabled
    assert ("step_noah_torch_ms" in row) == cpu_train.train_available()
    assert "| resnet18 | 2 |" in (tmp_path / "train.md").read_text()


def test_head_training_against_the_training_floor(tmp_path):
    code = main(["benchmark", "--train", "--head-only", "--shapes", "32,5,2,1/2,3,3", "24,40,1,1/4,2,2",
                 "--head-batches", "2", "--warmup", "0", "--repeats", "1", "--output", str(tmp_path)])
    assert code == 0
    rows = read_csv(tmp_path / "head_train.csv")
    assert [(r["shape"], r["batch"]) for r in rows] == [("C=32 M=5 N=2 r=1/2 3x3", "2"), ("C=24 M=40 N=1 r=1/4 2x2", "2")]
    for row in rows:
        assert float(row["grad_rel_err"]) < 1e-5
        for key in ("floor_ms", "fast_ms", "plain_ms", "lean_ms"):
            assert float(row[key]) > 0
        assert float(row["fast/floor"]) == pytest.approx(float(row["fast_ms"]) / float(row["floor_ms"]), rel=1e-3)
        assert float(row["fast/floor_q1"]) <= float(row["fast/floor"]) <= float(row["fast/floor_q3"])
        assert ("fast_torch_ms" in row) == cpu_train.train_available()
    assert "NOAH head alone, training" in (tmp_path / "head_train.md").read_text()


@pytest.mark.slow
def test_training_memory_of_whole_models(tmp_path):
    code = main(["benchmark", "--train", "--memory", "--models", "resnet18", "--img-size", "128", "--batch-size", "4",
                 "--num-classes", "300", "--output", str(tmp_path)])
    assert code == 0
    (row,) = read_csv(tmp_path / "train_memory.csv")
    assert row["status"] == "ok"
    assert float(row["peak_gap_MiB"]) > 0 and float(row["peak_noah_MiB"]) > 0
    if cpu_train.train_available():
        # packed features and two numbers per image, block and class vs the (B, N, M, L) maps
        assert float(row["head_saved_noah_MiB"]) < float(row["head_saved_noah_torch_MiB"]) / 3


def test_macs_count_the_head_as_specified():
    """MACs of NOAH over GAP: about C*M*L for the projections (SPEC §2), at batch 1."""
    import torch

    from noah.bench import count_macs
    from noah.head import NOAHHead

    head = NOAHHead(64, 10, 4, 0.5).eval()
    assert count_macs(head, torch.randn(1, 64, 3, 3)) == 64 * 10 * 9
    assert count_macs(head.set_impl("plain"), torch.randn(1, 64, 3, 3)) == 64 * 10 * 9


@pytest.mark.slow
def test_memory_mode_runs_each_impl_in_a_subprocess(tmp_path):
    code = main(["benchmark", "--memory", "--shapes", "32,50,2,1/2,4,4", "--batch-size", "4", "--impls", "plain,lean",
                 "--output", str(tmp_path)])
    assert code == 0
    rows = read_csv(tmp_path / "memory.csv")
    assert [r["impl"] for r in rows] == ["plain", "lean"]
    assert all(r["status"] == "ok" for r in rows)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "resnet18,not_a_model"], "unknown model 'not_a_model'"),
        (["--head-only", "--shapes", "512,1000,4"], "malformed head shape"),
        (["--head-only", "--head-batches", "1,x"], "malformed --head-batches"),
        (["--memory", "--impls", "plain,turbo"], "unknown head impl 'turbo'"),
        (["--repeats", "0"], "--repeats must be positive"),
        (["--device", "tpu"], "device"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, message, capsys):
    assert main(["benchmark", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("noah benchmark: error:")


def test_training_under_bf16_autocast(tmp_path):
    code = main(["benchmark", "--train", "--amp", "bf16", "--models", "resnet18", "--img-size", "32", "--batch-size", "2",
                 "--num-classes", "5", "--warmup", "0", "--repeats", "1", "--output", str(tmp_path)])
    assert code == 0
    (row,) = read_csv(tmp_path / "train.csv")
    assert float(row["step_noah_ms"]) > 0 and "bf16 autocast" in (tmp_path / "train.md").read_text()
    assert "step_noah_torch_ms" not in row  # the compiled kernel is float32 only: no kernel to switch off


def test_amp_outside_whole_model_training_is_refused(capsys):
    assert main(["benchmark", "--head-only", "--amp", "bf16"]) == 2
    assert "--amp applies to whole-model training timings" in capsys.readouterr().err
