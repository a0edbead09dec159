"""`noah plot`: curves read from run folders, one figure for several runs, PNG and SVG, no silent overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from noah.cli import main
from noah.engine.config import TrainConfig
from noah.engine.rundir import RunDir
from noah.errors import CheckpointError, ConfigError
from noah.viz.curves import curves_figure, read_curves


def fake_run(root: Path, head: str = "noah", task: str = "multiclass", epochs: int = 3,
             train_metric: bool = False) -> Path:
    """A run folder with a config, classes and ``epochs`` lines of metrics (no training)."""
    run = RunDir(root)
    run.root.mkdir(parents=True)
    run.write_config(TrainConfig(model="test_resnet", head=head, data="digits", epochs=5))
    run.write_classes(task, ["a", "b"])
    metric = "top1" if task == "multiclass" else "mAP"
    for e in range(1, epochs + 1):
        train = {"loss": 2.0 / e, "lr": 0.1 / e, "images_per_s": 100.0, "time": 3.0}
        if train_metric:
            train[metric] = 40.0 + 5 * e
        run.append_metrics({"epoch": e, "train": train, "val": {metric: 30.0 + 10 * e, "loss": 2.5 / e, "samples": 10}})
    return run.root


def _lines(fig):
    return [[(tuple(line.get_xdata()), tuple(line.get_ydata()), line.get_linestyle()) for line in ax.get_lines()]
            for ax in fig.axes]


def test_read_curves_and_draw_validation_solid_training_dashed(tmp_path: Path) -> None:
    a = read_curves(fake_run(tmp_path / "a", train_metric=True))
    assert a.metric == "top1" and a.epochs == [1, 2, 3] and a.val_metric == [40.0, 50.0, 60.0]
    assert a.train_metric == [45.0, 50.0, 55.0] and a.lr == pytest.approx([0.1, 0.05, 0.1 / 3])
    b = read_curves(fake_run(tmp_path / "b", head="gap", epochs=2))
    assert b.train_metric == [None, None]

    fig = curves_figure([a, b])
    metric_ax, loss_ax, lr_ax = _lines(fig)
    assert ((1, 2, 3), (40.0, 50.0, 60.0), "-") in metric_ax and ((1, 2, 3), (45.0, 50.0, 55.0), "--") in metric_ax
    assert ((1, 2), (40.0, 50.0), "-") in metric_ax and len(metric_ax) == 3  # b recorded no training top-1
    assert len(loss_ax) == 4 and {s for _, _, s in loss_ax} == {"-", "--"} and len(lr_ax) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["test_resnet · noah", "test_resnet · gap"]
    # two runs of the same model and head are told apart by their folders
    twin = curves_figure([a, read_curves(fake_run(tmp_path / "c"))])
    assert [t.get_text() for t in twin.axes[0].get_legend().get_texts()][:2] == [
        "test_resnet · noah (a)", "test_resnet · noah (c)"]


def test_runs_with_different_metrics_are_refused(tmp_path: Path) -> None:
    runs = [read_curves(fake_run(tmp_path / "a")), read_curves(fake_run(tmp_path / "b", task="multilabel"))]
    with pytest.raises(ConfigError, match="different metrics"):
        curves_figure(runs)


def test_a_run_without_epochs_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    root = fake_run(tmp_path / "a", epochs=0)
    with pytest.raises(CheckpointError, match="no finished epoch"):
        read_curves(root)
    assert main(["plot", str(root)]) == 2
    assert main(["plot", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no finished epoch" in err[0] and "run folder not found" in err[1]


def test_plot_writes_png_and_svg_and_never_overwrites_silently(tmp_path: Path, capsys) -> None:
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", head="gap")
    assert main(["plot", str(a)]) == 0
    png, svg = a / "curves.png", a / "curves.svg"
    assert png.read_bytes().startswith(b"\x89PNG") and b"<svg" in svg.read_bytes()[:2000]
    before = png.read_bytes()
    capsys.readouterr()
    assert main(["plot", str(a)]) == 2
    assert "already holds curves.png, curves.svg; pass --overwrite" in capsys.readouterr().err
    assert png.read_bytes() == before
    assert main(["plot", str(a), "--overwrite", "--title", "again"]) == 0

    assert main(["plot", str(a), str(b)]) == 2
    assert "pass --output DIR" in capsys.readouterr().err
    out = tmp_path / "both"
    assert main(["plot", str(a), str(b), "--output", str(out), "--name", "fig3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fig3.png", "fig3.svg"]  # no temporary files left
