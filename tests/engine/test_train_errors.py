"""Bad input to `noah train` / `eval` / `predict`: one line on stderr and exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


from noah.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_missing_data_folder(tmp_path: Path, tiny_args, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nowhere"), *tiny_args]) == 2
    assert "nowhere" in _one_line_error(capsys)


def test_unknown_model(image_folder: Path, tmp_path: Path, tiny_args, capsys) -> None:
    args = [*tiny_args, "--model", "no_such_net", "--output", str(tmp_path / "o")]
    assert main(["train", "--data", str(image_folder), *args]) == 2
    assert "no_such_net" in _one_line_error(capsys)


def test_unknown_recipe_and_key_in_yaml(tmp_path: Path, tiny_args, capsys) -> None:
    bad_recipe = tmp_path / "r.yaml"
    bad_recipe.write_text("recipe: fastest\n")
    assert main(["train", "--config", str(bad_recipe), *tiny_args]) == 2
    assert "fastest" in _one_line_error(capsys)
    bad_key = tmp_path / "k.yaml"
    bad_key.write_text("epoch: 3\n")
    assert main(["train", "--config", str(bad_key), *tiny_args]) == 2
    assert "epoch" in _one_line_error(capsys)


def test_json_that_is_not_coco(tmp_path: Path, tiny_args, coco_folder: Path, capsys) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco_folder, root)
    (root / "annotations" / "instances_train.json").write_text(json.dumps({"hello": [1, 2, 3]}))
    assert main(["train", "--data", str(root), "--output", str(tmp_path / "o"), *tiny_args]) == 2
    _one_line_error(capsys)


def test_empty_class_folder(tmp_path: Path, tiny_args, image_folder: Path, capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    for split in ("train", "val"):
        (root / split / "c9").mkdir()
    assert main(["train", "--data", str(root), "--output", str(tmp_path / "o"), *tiny_args]) == 2
    assert "c9" in _one_line_error(capsys)


def test_corrupt_image_fails_with_its_path_or_is_skipped(tmp_path: Path, tiny_args, image_folder: Path,
                                                         capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    bad = root / "train" / "c0" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    out = tmp_path / "o"
    assert main(["train", "--data", str(root), "--output", str(out), "--epochs", "1", *tiny_args]) == 2
    assert "broken.png" in _one_line_error(capsys)
    assert main(["train", "--data", str(root), "--output", str(out), "--epochs", "1", "--skip-bad-images",
                 *tiny_args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_images"] == 1 and summary["train_images"] == 19  # counted, replaced by a readable one


def test_eval_and_predict_without_a_run(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--run", str(tmp_path / "missing")]) == 2
    _one_line_error(capsys)
    assert main(["predict", "x.png", "--run", str(tmp_path)]) == 2
    assert "config.yaml" in _one_line_error(capsys)
