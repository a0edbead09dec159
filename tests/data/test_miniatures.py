"""The built-in miniatures digits-voc, digits-inat and digits-reid: real layouts, deterministic, consistent labels."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

from noah import ConfigError
from noah.data import create_dataset, resolve_dataset
from noah.data.digits_inat import generate_digits_inat, long_tail_counts
from noah.data.digits_reid import generate_digits_reid
from noah.data.digits_voc import generate_digits_voc
from noah.data.market1501 import parse_market_name
from noah.metrics import IGNORE_TARGET, shot_groups

SIZES = {"digits-voc": (8, 4), "digits-inat": (150, 100), "digits-reid": (30, 40)}
GENERATORS = {"digits-voc": generate_digits_voc, "digits-inat": generate_digits_inat, "digits-reid": generate_digits_reid}


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_bytes(tmp_path, name):
    a = GENERATORS[name](tmp_path / "a", 3, *SIZES[name], 32)
    b = GENERATORS[name](tmp_path / "b", 3, *SIZES[name], 32)
    c = GENERATORS[name](tmp_path / "c", 4, *SIZES[name], 32)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)


def test_digits_voc_is_a_voc2007_folder_with_consistent_class_files(tmp_path):
    info = resolve_dataset("digits-voc", cache_dir=tmp_path, num_train=12, num_val=6, image_size=48)
    assert (info.format, info.task, info.num_classes, info.image_size) == ("voc", "multilabel", 10, 48)
    assert info.split_names == {"train": "trainval", "val": "test"}
    voc = info.root / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    split_ids = {s: (main / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval", "test")}
    assert sorted(split_ids["train"] + split_ids["val"]) == split_ids["trainval"] and len(split_ids["trainval"]) == 12
    assert not set(split_ids["trainval"]) & set(split_ids["test"]) and len(split_ids["test"]) == 6
    difficult = 0
    for role, split in info.split_names.items():
        dataset = create_dataset(info, role)
        assert dataset.image_ids == split_ids[split]
        for digit in range(10):
            labels = dict(line.split() for line in (main / f"{digit}_{split}.txt").read_text().splitlines())
            for image_id, (_, target) in zip(dataset.image_ids, dataset.samples):
                expected = {"1": 1.0, "0": float(IGNORE_TARGET), "-1": 0.0}[labels[image_id]]
                assert float(target[digit]) == expected
                difficult += labels[image_id] == "0"
        assert (voc / "JPEGImages" / f"{dataset.image_ids[0]}.jpg").is_file()
    assert difficult > 0  # some digits are marked difficult (about one in six)
    image, _ = dataset[0]
    assert image.size == (48, 48)


def test_digits_inat_is_long_tailed_with_digit_supercategories(tmp_path):
    info = resolve_dataset("digits-inat", cache_dir=tmp_path, num_train=150, num_val=100, image_size=32)
    assert (info.format, info.task, info.num_classes) == ("inat", "multiclass", 100)
    assert info.supercategories == [str(d) for d in range(10)]
    assert info.class_supercategory == [i // 10 for i in range(100)]
    assert info.class_names[:2] == ["0 plain warm", "0 plain cool"]
    assert info.class_counts == long_tail_counts(0, 150 / sum(long_tail_counts(0)))
    assert min(info.class_counts) >= 1 and max(info.class_counts) == 6
    val = create_dataset(info, "val")
    assert val.class_counts == [1] * 100
    path = Path(val.samples[0][0])
    assert path.relative_to(info.root).parts[:3] == ("train_val_images", "0", "0 plain warm")
    # the default profile: 150 down to 3 images; 11 many-, 41 medium-, 48 few-shot classes
    groups = shot_groups(long_tail_counts(0))
    assert [groups.count(g) for g in ("many", "medium", "few")] == [11, 41, 48]
    assert (max(long_tail_counts(0)), min(long_tail_counts(0)), sum(long_tail_counts(0))) == (150, 3, 3795)


def test_digits_reid_is_a_market_folder_where_every_query_can_be_found(tmp_path):
    info = resolve_dataset("digits-reid", cache_dir=tmp_path, num_train=60, num_val=80, image_size=32)
    assert (info.format, info.task) == ("market1501", "reid")
    people = {}
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        people[folder] = [parse_market_name(p) for p in sorted((info.root / folder).iterdir())]
    assert len(people["bounding_box_train"]) >= 60
    assert len(people["query"]) + len(people["bounding_box_test"]) >= 80
    train_ids = {pid for pid, _ in people["bounding_box_train"]}
    test_ids = {pid for pid, _ in people["query"]}
    assert info.num_classes == len(train_ids) and not train_ids & test_ids
    gallery_cameras = defaultdict(set)
    for pid, camera in people["bounding_box_test"]:
        gallery_cameras[pid].add(camera)
    assert all(gallery_cameras[pid] - {camera} for pid, camera in people["query"])  # a match in another camera
    assert len(people["query"]) == len(set(people["query"]))  # one query per person and camera
    assert {0, -1} <= set(gallery_cameras) and 8 <= sum(pid == 0 for pid, _ in people["bounding_box_test"])
    image, target = create_dataset(info, "query")[0]
    assert image.size == (16, 32) and target.tolist() == list(people["query"][0])


def test_miniature_argument_errors(tmp_path):
    with pytest.raises(ConfigError, match="digits-voc needs num_train >= 2"):
        generate_digits_voc(tmp_path / "v", num_train=1)
    with pytest.raises(ConfigError, match="image_size must be at least 32 pixels, got 16"):
        generate_digits_inat(tmp_path / "i", image_size=16)
    with pytest.raises(ConfigError, match=r"the 1438 training scans give .* images, fewer than the 99999 asked for"):
        generate_digits_reid(tmp_path / "r", num_train=99999, image_size=32)
