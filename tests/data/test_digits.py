"""Built-in digit scenes: real files, deterministic, disjoint train/val sources, correct labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noah import ConfigError
from noah.data import create_dataset, resolve_dataset
from noah.data.digits import generate_digit_scenes, split_digit_pools


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate_digit_scenes(tmp_path / "a", "multilabel", seed=3, num_train=10, num_val=3, image_size=64)
    b = generate_digit_scenes(tmp_path / "b", "multilabel", seed=3, num_train=10, num_val=3, image_size=64)
    c = generate_digit_scenes(tmp_path / "c", "multilabel", seed=4, num_train=10, num_val=3, image_size=64)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)


def test_train_and_val_pools_are_disjoint_and_cover_all_scans():
    pools = split_digit_pools(0)
    train, val = set(pools["train"].indices.tolist()), set(pools["val"].indices.tolist())
    assert not train & val
    assert len(train | val) == 1797
    assert set(pools["val"].labels.tolist()) == set(range(10))


def test_multiclass_scenes_are_an_image_folder(tmp_path):
    root = generate_digit_scenes(tmp_path / "mc", "multiclass", seed=0, num_train=20, num_val=5, image_size=64)
    files = sorted((root / "train").rglob("*.png"))
    assert len(files) == 20 and len(list((root / "val").rglob("*.png"))) == 5
    assert sorted(f.parent.name for f in files) == sorted([str(d) for d in range(10)] * 2)
    with Image.open(files[0]) as img:
        assert img.size == (64, 64) and img.mode == "RGB"
    info = json.loads((root / "info.json").read_text())
    assert info["seed"] == 0 and info["num_train"] == 20 and info["image_size"] == 64


def test_multilabel_scenes_are_coco_with_boxes_inside_the_canvas(tmp_path):
    root = generate_digit_scenes(tmp_path / "ml", "multilabel", seed=0, num_train=12, num_val=4, image_size=96)
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == [str(d) for d in range(10)]
    assert len(coco["images"]) == 12
    per_image: dict[int, list[int]] = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w > 0 and h > 0
        assert ann["area"] == w * h and ann["iscrowd"] == 0
        per_image.setdefault(ann["image_id"], []).append(ann["category_id"])
    assert all(1 <= len(v) <= 4 and len(set(v)) == len(v) for v in per_image.values())
    assert len(per_image) == 12  # every scene holds at least one digit
    info = resolve_dataset(root)
    dataset = create_dataset(info, "train")
    assert info.task == "multilabel" and info.num_classes == 10
    for (path, target), image in zip(dataset.samples, coco["images"]):
        assert Path(path).name == image["file_name"]
        expected = np.zeros(10, dtype=np.float32)
        expected[[c - 1 for c in per_image[image["id"]]]] = 1
        np.testing.assert_array_equal(target.numpy(), expected)


def test_digit_ink_is_inside_its_box(tmp_path):
    """The labelled box is where the scene differs most from a scene drawn without that digit is
    hard to test directly; instead check the box region is not flat background."""
    root = generate_digit_scenes(tmp_path / "ml", "multilabel", seed=1, num_train=10, num_val=1, image_size=128)
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        pixels = np.asarray(Image.open(root / "train" / names[ann["image_id"]]))[y:y + h, x:x + w]
        assert pixels.std() > 5


def test_bad_generator_arguments():
    with pytest.raises(ConfigError, match="unknown digit-scene variant 'both'"):
        generate_digit_scenes("/tmp/unused", "both")
    with pytest.raises(ConfigError, match="image_size must be at least 32 pixels, got 16"):
        generate_digit_scenes("/tmp/unused", image_size=16)


def test_crowd_scenes_have_small_digits_and_more_clutter(tmp_path):
    """digits-crowd / -multilabel: the same layouts, smaller digits (CROWD_STYLE), 2-4 per
    multi-label scene, deterministic; the original scenes keep their larger digits."""
    from noah.data.digits import CROWD_STYLE, DEFAULT_STYLE

    size = 96
    crowd = generate_digit_scenes(tmp_path / "c", "crowd-multilabel", seed=0, num_train=12, num_val=3, image_size=size)
    again = generate_digit_scenes(tmp_path / "c2", "crowd-multilabel", seed=0, num_train=12, num_val=3, image_size=size)
    assert tree_digest(crowd) == tree_digest(again)
    plain = generate_digit_scenes(tmp_path / "p", "multilabel", seed=0, num_train=12, num_val=3, image_size=size)

    def heights(root: Path) -> tuple[list[float], dict[int, int]]:
        coco = json.loads((root / "annotations" / "instances_train.json").read_text())
        counts: dict[int, int] = {}
        for ann in coco["annotations"]:
            counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
        return [ann["bbox"][3] / size for ann in coco["annotations"]], counts

    crowd_heights, crowd_counts = heights(crowd)
    plain_heights, _ = heights(plain)
    # ink boxes lie within the drawn digit's height (rotation adds a little)
    assert max(crowd_heights) <= CROWD_STYLE.digit_height[1] * 1.25
    assert CROWD_STYLE.digit_height[1] < DEFAULT_STYLE.digit_height[1]
    assert np.median(plain_heights) > 1.25 * np.median(crowd_heights)
    assert all(2 <= n <= 4 for n in crowd_counts.values()) and len(crowd_counts) == 12

    mc = generate_digit_scenes(tmp_path / "mc", "crowd", seed=0, num_train=20, num_val=5, image_size=64)
    assert sorted(f.parent.name for f in (mc / "train").rglob("*.png")) == sorted([str(d) for d in range(10)] * 2)


def test_crowd_builtins_resolve_at_64_px(tmp_path, monkeypatch):
    monkeypatch.setenv("NOAH_CACHE", str(tmp_path))
    info = resolve_dataset("digits-crowd-multilabel", num_train=10, num_val=4)
    assert info.task == "multilabel" and info.num_classes == 10
    assert len(create_dataset(info, "val")) == 4
    with Image.open(next((tmp_path).rglob("train_00000.png"))) as img:
        assert img.size == (64, 64)
