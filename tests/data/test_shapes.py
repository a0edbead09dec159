"""Built-in odd-shape scenes: deterministic, labelled by the squares' colours, in the usual layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noah import ConfigError
from noah.data import create_dataset, resolve_dataset
from noah.data.shapes import COLOURS, generate_shape_scenes, render_shapes



def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate_shape_scenes(tmp_path / "a", "multilabel", seed=1, num_train=10, num_val=3)
    b = generate_shape_scenes(tmp_path / "b", "multilabel", seed=1, num_train=10, num_val=3)
    c = generate_shape_scenes(tmp_path / "c", "multilabel", seed=2, num_train=10, num_val=3)
    assert tree_digest(a) == tree_digest(b) != tree_digest(c)


def test_the_label_is_the_colour_of_the_square(tmp_path):
    root = generate_shape_scenes(tmp_path / "mc", "multiclass", seed=0, num_train=20, num_val=5, image_size=64)
    files = sorted((root / "train").rglob("*.png"))
    assert sorted(f.parent.name for f in files) == sorted(list(COLOURS) * 2)
    for f in files:  # a square of the class colour (within the jitter) is in the picture: >= 9x9 such pixels
        with Image.open(f) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
            close = np.abs(np.asarray(img).astype(int) - np.array(COLOURS[f.parent.name])).max(axis=2) <= 12
        assert close.sum() >= 81


def test_render_reports_squares_whose_pixels_have_their_colour():
    names = list(COLOURS)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        image, placed = render_shapes(rng, [2, 7], 96)
        pixels = np.asarray(image).astype(int)
        assert 1 <= len(placed) <= 2
        for colour, (x, y, w, h) in placed:
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
            centre = pixels[y + h // 2, x + w // 2]
            assert np.abs(centre - np.array(COLOURS[names[colour]])).max() <= 12


def test_multilabel_scenes_are_coco_with_one_to_three_distinct_colours(tmp_path):
    root = generate_shape_scenes(tmp_path / "ml", "multilabel", seed=0, num_train=30, num_val=4, image_size=64)
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(COLOURS)
    labels: dict[int, list[int]] = {}
    for ann in coco["annotations"]:
        labels.setdefault(ann["image_id"], []).append(ann["category_id"])
    assert len(labels) == 30 and all(1 <= len(v) <= 3 and len(set(v)) == len(v) for v in labels.values())
    assert max(len(v) for v in labels.values()) == 3


def test_builtins_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("NOAH_CACHE", str(tmp_path))
    info = resolve_dataset("shapes", num_train=20, num_val=10)
    assert info.task == "multiclass" and list(info.class_names) == sorted(COLOURS)
    assert len(create_dataset(info, "train")) == 20
    assert resolve_dataset("shapes-multilabel", num_train=10, num_val=4).task == "multilabel"


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(variant="odd"), r"unknown shape-scene variant 'odd'"),
    (dict(image_size=16), r"image_size must be at least 32 pixels, got 16"),
])
def test_bad_arguments_are_config_errors(tmp_path, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        generate_shape_scenes(tmp_path / "x", **kwargs)
