"""`noah visualize` end to end on tiny trained runs: grids, the HTML page, Grad-CAM++, the score, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noah.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_grids_and_a_self_contained_page_beside_the_baseline(tiny_runs, val_images, tmp_path, capsys,
                                                             self_contained) -> None:
    out = tmp_path / "vis"
    images = [str(p) for p in val_images[:2]]
    args = ["visualize", "--run", str(tiny_runs["noah"]), *images, "--baseline", str(tiny_runs["gap"]),
            "--classes", "3", "7", "--block", "2", "--output", str(out)]
    assert main(args) == 0
    stems = [Path(p).stem for p in images]
    expected = {f"01-{stems[0]}-maps.png", f"01-{stems[0]}-block2.png", f"02-{stems[1]}-maps.png",
                f"02-{stems[1]}-block2.png", "index.html"}
    assert {p.name for p in out.iterdir()} == expected
    with Image.open(out / f"01-{stems[0]}-maps.png") as img:
        width, height = img.size
    assert width > 2.5 * height  # a row per class (2), a column per map: input, 4 blocks, value, product, Grad-CAM++
    embedded = self_contained(out / "index.html")
    assert len(embedded) == 4 and embedded[0] == (out / f"01-{stems[0]}-maps.png").read_bytes()
    page = (out / "index.html").read_text()
    assert "GAP score" in page and "Grad-CAM++" in page
    assert f"wrote 4 figures and {out / 'index.html'}" in capsys.readouterr().out

    before = (out / "index.html").read_bytes()
    assert main(args) == 2
    assert "already holds" in _one_line_error(capsys) and (out / "index.html").read_bytes() == before
    assert main([*args[:-2], "--output", str(out), "--overwrite", "--threshold", "0.0"]) == 0


def test_the_default_output_is_inside_the_run(tiny_runs, val_images, capsys) -> None:
    assert main(["visualize", "--run", str(tiny_runs["noah"]), str(val_images[0])]) == 0
    folder = tiny_runs["noah"] / "visualize"
    assert (folder / "index.html").is_file() and len(list(folder.glob("*-block1.png"))) == 1


def test_score_prints_both_ratios(tiny_runs, capsys) -> None:
    args = ["visualize", "--run", str(tiny_runs["noah"]), "--baseline", str(tiny_runs["gap"]), "--score", "--json",
            "--per-block"]
    assert main(args) == 0
    noah, *blocks, gradcam = json.loads(capsys.readouterr().out)
    assert noah["method"].startswith("NOAH attention (sum") and gradcam["method"] == "Grad-CAM++"
    assert [b["method"] for b in blocks] == [f"NOAH block {n} attention" for n in (1, 2, 3, 4)]
    # the blocks' attention maps sum to the total, so the total's inside share is their mean
    assert noah["inside"] == pytest.approx(sum(b["inside"] for b in blocks) / 4, abs=0.02)
    for result in (noah, gradcam, *blocks):
        assert result["pairs"] > 0 and 0 <= result["inside"] <= 1 and 0 < result["share"] < 1
        assert 0 <= result["ratio"] <= 1 / min(result["share"], 1) * 10
    # the run's own scenes, named or not, and the first two only
    for data in ([], ["--data", "digits-multilabel"]):
        assert main(["visualize", "--run", str(tiny_runs["noah"]), "--score", "--limit", "2", *data]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 1 and "attention-in-box ratio" in lines[0] and "(1.0 = chance)" in lines[0]
        assert "over 2 scene-class pairs" not in lines[0] and "pairs" in lines[0]


def test_score_on_other_annotated_data(tiny_runs, tmp_path, make_coco, capsys) -> None:
    boxes = [{3: [[0, 0, 32, 32]], 7: [[32, 32, 32, 32]]}]
    digits = make_coco(tmp_path / "digits", boxes, names="0123456789")
    assert main(["visualize", "--run", str(tiny_runs["noah"]), "--score", "--data", str(digits), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["pairs"] == 2 and result["share"] == 0.25
    letters = make_coco(tmp_path / "letters", boxes, names="abcdefghij")
    assert main(["visualize", "--run", str(tiny_runs["noah"]), "--score", "--data", str(letters)]) == 2
    assert "has other classes than" in _one_line_error(capsys)


@pytest.mark.parametrize("case", ["gap-run", "no-work", "bad-class", "bad-block", "baseline-classes", "no-run",
                                  "missing-image", "score-without-boxes"])
def test_bad_requests_are_one_line_errors(case, tiny_runs, val_images, tmp_path, capsys) -> None:
    noah, gap, image = str(tiny_runs["noah"]), str(tiny_runs["gap"]), str(val_images[0])
    out = ["--output", str(tmp_path / "o")]
    args, expected = {
        "gap-run": (["--run", gap, image, *out], "shows the maps of a NOAH head"),
        "no-work": (["--run", noah], "give IMAGE files to visualize, or --score"),
        "bad-class": (["--run", noah, image, "--classes", "eleven", *out], "neither a class name"),
        "bad-block": (["--run", noah, image, "--block", "9", *out], "--block 9: the head has 4 blocks"),
        "baseline-classes": (["--run", noah, "--score", "--baseline", str(_other_classes(tmp_path, gap))],
                             "trained on other classes"),
        "no-run": ([image, *out], "give either --run DIR or --model NAME --weights FILE"),
        "missing-image": (["--run", noah, str(tmp_path / "nope.png"), *out], "image not found"),
        "score-without-boxes": (["--run", str(_on_image_folder(tmp_path, noah)), "--score"], "not COCO-format data"),
    }[case]
    assert main(["visualize", *args]) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def _other_classes(tmp_path: Path, run: str) -> Path:
    """A copy of ``run`` claiming other class names."""
    import shutil

    copy = tmp_path / "renamed"
    shutil.copytree(run, copy)
    classes = json.loads((copy / "classes.json").read_text())
    classes["class_names"] = [f"x{n}" for n in classes["class_names"]]
    (copy / "classes.json").write_text(json.dumps(classes))
    return copy


def _on_image_folder(tmp_path: Path, run: str) -> Path:
    """A copy of ``run`` whose config names an image folder (no boxes)."""
    import shutil

    import yaml

    for split in ("train", "val"):
        (tmp_path / "folder" / split / "a").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "folder" / split / "a" / "0.png")
    copy = tmp_path / "folder-run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"], config["data_size"] = str(tmp_path / "folder"), None
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def test_model_and_weights_instead_of_a_run(tiny_runs, val_images, tmp_path, capsys) -> None:
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"digit {d}" for d in range(10)))
    out = tmp_path / "w"
    args = ["visualize", str(val_images[0]), "--model", "test_resnet", "--weights",
            str(tiny_runs["noah"] / "model.safetensors"), "--num-classes", "10", "--class-names", str(names),
            "--image-size", "64", "--task", "multilabel", "--output", str(out)]
    # the run was trained with output stride 8: the plain model has other feature maps but the same weights
    assert main(args) == 0
    assert "digit" in (out / "index.html").read_text()
    assert main([*args[:-2], "--num-classes", "7", "--output", str(tmp_path / "w7")]) == 2
    assert "10 class names given for 7 classes" in _one_line_error(capsys)
