"""Format detection, built-in caching, datasets over files, and the errors of each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from noah import ConfigError, DataError
from noah.data import BUILTIN_DATASETS, create_dataset, resolve_dataset


def write_png(path: Path, colour: int = 128, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (colour, colour, colour)).save(path)


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for i, name in enumerate(classes):
            for j in range(per_class):
                write_png(root / split / name / f"{j}.png", colour=40 * i + j)
    return root


def make_coco(root: Path, split_suffix: str = "2014") -> Path:
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    for split in ("train", "val"):
        images = [{"id": 10 + i, "file_name": f"{split}_{i}.jpg", "width": 16, "height": 16} for i in range(3)]
        for img in images:
            write_png(root / f"{split}{split_suffix}" / img["file_name"])
        annotations = [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [0, 0, 4, 4]},
            {"id": 2, "image_id": 10, "category_id": 18, "bbox": [1, 1, 4, 4]},
            {"id": 3, "image_id": 11, "category_id": 1, "bbox": [1, 1, 4, 4]},
        ]
        path = root / "annotations" / f"instances_{split}{split_suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def test_image_folder_is_detected_as_multiclass(tmp_path):
    info = resolve_dataset(make_image_folder(tmp_path / "d"))
    assert (info.task, info.format, info.num_classes, info.class_names) == ("multiclass", "imagefolder", 2, ["cat", "dog"])
    dataset = create_dataset(info, "val", transform=lambda img: torch.tensor(img.size))
    image, target = dataset[3]
    assert target == 1 and image.tolist() == [16, 16] and len(dataset) == 4


def test_coco_folder_is_detected_as_multilabel(tmp_path):
    info = resolve_dataset(make_coco(tmp_path / "coco"))
    assert (info.task, info.format, info.class_names) == ("multilabel", "coco", ["person", "car", "dog"])
    dataset = create_dataset(info, "train")
    targets = [t.tolist() for _, t in dataset.samples]
    assert targets == [[0, 1, 1], [1, 0, 0], [0, 0, 0]]  # the image without annotations is kept
    image, target = dataset[0]
    assert image.mode == "RGB" and target.dtype == torch.float32


def test_explicit_task_wins_and_wrong_task_is_an_error(tmp_path):
    root = make_coco(make_image_folder(tmp_path / "both"), split_suffix="")
    assert resolve_dataset(root).task == "multilabel"
    assert resolve_dataset(root, task="multiclass").format == "imagefolder"
    with pytest.raises(DataError, match="is not an image folder"):
        resolve_dataset(make_coco(tmp_path / "coco"), task="multiclass")
    with pytest.raises(DataError, match="no COCO annotations for both splits"):
        resolve_dataset(make_image_folder(tmp_path / "imgs"), task="multilabel")
    with pytest.raises(ConfigError, match="unknown task 'detection'"):
        resolve_dataset(tmp_path, task="detection")


def test_builtin_is_cached_and_a_leftover_temp_folder_is_not_trusted(tmp_path):
    cache = tmp_path / "cache"
    stale = cache / ".tmp-digits-v1-seed0-10x4-64px-dead" / "data"
    stale.mkdir(parents=True)
    info = resolve_dataset("digits", cache_dir=cache, num_train=10, num_val=4, image_size=64)
    assert info.root.parent == cache and not info.root.name.startswith(".tmp")
    assert info.image_size == 64 and info.num_classes == 10 and info.task == "multiclass"
    marker = info.root / "info.json"
    stamp = marker.stat().st_mtime_ns
    again = resolve_dataset("digits", cache_dir=cache, num_train=10, num_val=4, image_size=64)
    assert again.root == info.root and marker.stat().st_mtime_ns == stamp
    assert sorted(BUILTIN_DATASETS) == ["digits", "digits-crowd", "digits-crowd-multilabel", "digits-inat", "digits-multilabel",
                                        "digits-reid", "digits-voc", "shapes", "shapes-multilabel"]
    ml = resolve_dataset("digits-multilabel", cache_dir=cache, num_train=10, num_val=4, image_size=64)
    assert ml.task == "multilabel" and ml.format == "coco"
    with pytest.raises(DataError, match="is multiclass, not multilabel"):
        resolve_dataset("digits", task="multilabel", cache_dir=cache, num_train=10, num_val=4, image_size=64)


def test_bad_images_fail_with_their_path_or_are_skipped_and_counted(tmp_path):
    root = make_image_folder(tmp_path / "d")
    bad = root / "train" / "cat" / "1.png"
    bad.write_bytes(b"\x89PNG not really")
    info = resolve_dataset(root)
    strict = create_dataset(info, "train")
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        strict[1]
    lenient = create_dataset(info, "train", on_bad_image="skip")
    items = [lenient[i] for i in range(len(lenient))]
    assert lenient.skipped == 1 and len(items) == 4 and lenient.bad_paths == [str(bad)]
    assert items[1][1] == 1  # the next readable sample stands in
    items = [lenient[i] for i in range(len(lenient))]  # a second epoch counts the image once
    assert lenient.skipped == 1


def _as_list(batch):
    return batch


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_skipped_images_are_counted_across_loader_workers(tmp_path, start_method):
    """Workers are other processes: the count lives in shared memory, not in their copies."""
    root = make_image_folder(tmp_path / "d")
    bad = root / "train" / "cat" / "1.png"
    bad.write_bytes(b"\x89PNG not really")
    dataset = create_dataset(resolve_dataset(root), "train", on_bad_image="skip")
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=_as_list,
                                         multiprocessing_context=start_method)
    assert len(list(loader)) == 4
    assert dataset.skipped == 1 and dataset.bad_paths == [str(bad)]


@pytest.mark.parametrize(
    "setup,pattern",
    [
        (lambda r: r / "nope", r"data folder not found: .*nope"),
        (lambda r: [(r / "f.txt").write_text("x"), r / "f.txt"][1], r"--data must be a folder"),
        (lambda r: (r / "train").mkdir() or r, r"is not an image folder"),
        (lambda r: make_image_folder(r) and __import__("shutil").rmtree(r / "val") or r, r"missing folder .*val"),
        (lambda r: make_image_folder(r) and (r / "train" / "empty").mkdir() or r, r"class folder .*empty holds no images"),
        (lambda r: make_image_folder(r) and (r / "val" / "bird").mkdir() or r, None),
    ],
)
def test_folder_errors_are_one_line_data_errors(tmp_path, setup, pattern):
    root = setup(tmp_path)
    if pattern is None:  # a class only in val: found when the split is read
        info = resolve_dataset(root)
        with pytest.raises(DataError, match="classes that the training split lacks: bird"):
            create_dataset(info, "val")
        return
    with pytest.raises(DataError, match=pattern) as info:
        resolve_dataset(root)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda c: c.pop("annotations"), r"is not a COCO instances file: no list under 'annotations'"),
        (lambda c: c["annotations"].append({"id": 9, "image_id": 999, "category_id": 1}), r"unknown image id 999"),
        (lambda c: c["annotations"].append({"id": 9, "image_id": 10, "category_id": 77}), r"unknown category id 77"),
    ],
)
def test_bad_coco_json(tmp_path, mutate, pattern):
    root = make_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2014.json"
    coco = json.loads(path.read_text())
    mutate(coco)
    path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=pattern):
        create_dataset(resolve_dataset(root), "val")


def test_json_that_is_not_json(tmp_path):
    root = make_coco(tmp_path / "coco")
    (root / "annotations" / "instances_train2014.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read .*instances_train2014.json as JSON"):
        resolve_dataset(root)


def test_bad_on_bad_image_value_is_a_config_error(tmp_path):
    info = resolve_dataset(make_image_folder(tmp_path / "imgs"))
    with pytest.raises(ConfigError, match="on_bad_image must be 'error' or 'skip', got 'ignore'"):
        create_dataset(info, "train", on_bad_image="ignore")


def test_two_annotation_files_for_one_split_are_an_error(tmp_path):
    root = make_coco(tmp_path / "coco")
    (root / "annotations" / "instances_val2017.json").write_text("{}")
    with pytest.raises(DataError, match="2 COCO annotation files for the val split .*instances_val2014.json, "
                                        "annotations/instances_val2017.json"):
        resolve_dataset(root)
