"""`noah report`: one self-contained page per run or comparison."""

from __future__ import annotations

import shutil

import yaml

from noah.cli import main


def test_a_run_report_holds_config_metrics_curves_and_gallery(tiny_runs, capsys, self_contained) -> None:
    run = tiny_runs["noah"]
    assert main(["report", str(run), "--gallery", "1"]) == 0
    page = run / "report.html"
    assert capsys.readouterr().out.strip() == str(page)
    images = self_contained(page)
    text = page.read_text()
    for part in ("NOAH run: noah", "Configuration", "Metrics per epoch", "Training curves", "Gallery",
                 "val mAP", "output_stride", "test_resnet · noah"):
        assert part in text, part
    assert len(images) >= 2  # the curves and at least one gallery image (a right or a wrong one)
    assert "attention summed over blocks" in text

    assert main(["report", str(run)]) == 2
    assert "already holds report.html; pass --overwrite" in capsys.readouterr().err


def test_a_comparison_report_shows_its_table_and_the_runs_inside(tiny_runs, tmp_path, capsys, self_contained) -> None:
    compare = tmp_path / "cmp"
    for head, run in tiny_runs.items():
        shutil.copytree(run, compare / "runs" / head, ignore=shutil.ignore_patterns("report.html", "visualize"))
    (compare / "results.csv").write_text("model,head,mAP\ntest_resnet,gap,20.5\ntest_resnet,noah,21.5\n")
    assert main(["report", "--compare", str(compare), "--gallery", "1"]) == 0
    page = compare / "report.html"
    self_contained(page)
    text = page.read_text()
    assert "NOAH comparison: cmp" in text and "results.csv" in text
    assert "21.5" in text and "Grad-CAM++ (this run has no NOAH head)" in text
    assert text.count("Metrics per epoch") == 2


def test_missing_data_costs_the_gallery_not_the_report(tiny_runs, tmp_path, capsys, self_contained) -> None:
    run = tmp_path / "moved"
    shutil.copytree(tiny_runs["noah"], run, ignore=shutil.ignore_patterns("report.html", "visualize"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["report", str(run), "--output", str(tmp_path / "r.html")]) == 0
    self_contained(tmp_path / "r.html")
    assert "No gallery: data folder not found" in (tmp_path / "r.html").read_text()


def test_bad_requests_are_one_line_errors(tiny_runs, tmp_path, capsys) -> None:
    runs = [str(tiny_runs["noah"]), str(tiny_runs["gap"])]
    for args, expected in (
        (runs, "several runs: pass --output FILE"),
        ([], "give RUN_DIR folders, or --compare DIR"),
        (["--compare", str(tmp_path / "none")], "--compare: folder not found"),
        ([str(tmp_path)], "is not a noah run folder"),
    ):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
