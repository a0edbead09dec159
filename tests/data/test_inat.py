"""iNaturalist: detection, supercategories, training counts, 2021 naming, balanced sampling, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from noah import DataError
from noah.data import class_balanced_sampler, create_dataset, detect_formats, resolve_dataset
from noah.metrics import LongTailMetrics

CATEGORIES = [
    {"id": 0, "name": "Achillea millefolium", "supercategory": "Plantae"},
    {"id": 1, "name": "Cardinalis cardinalis", "supercategory": "Aves"},
    {"id": 2, "name": "Turdus migratorius", "supercategory": "Aves"},
    {"id": 5, "name": "Danaus plexippus", "supercategory": "Insecta"},
]
TRAIN_COUNTS = {0: 4, 1: 1, 2: 2, 5: 3}


def inat_split(root: Path, counts: dict[int, int], first_id: int) -> dict:
    """Images under train_val_images/<supercategory>/<name>/ (as in 2017), one annotation each."""
    names = {c["id"]: (c["supercategory"], c["name"]) for c in CATEGORIES}
    images, annotations = [], []
    for category_id, count in counts.items():
        for _ in range(count):
            image_id = first_id + len(images)
            file_name = f"train_val_images/{names[category_id][0]}/{names[category_id][1]}/{image_id:032x}.jpg"
            (root / file_name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 20), (image_id * 7 % 256, 40, 200)).save(root / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": 24, "height": 20, "license": 1})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": category_id})
    return {"info": {"year": 2017}, "images": images, "annotations": annotations, "categories": CATEGORIES, "licenses": []}


def write_inat(root: Path, year: str = "2017", mini: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = {"train": inat_split(root, TRAIN_COUNTS, 100), "val": inat_split(root, {c: 1 for c in TRAIN_COUNTS}, 500)}
    if mini:
        files["train_mini"] = inat_split(root, {c: 1 for c in TRAIN_COUNTS}, 900)
    for split, data in files.items():
        (root / f"{split}{year}.json").write_text(json.dumps(data))
    return root


def test_inat_is_detected_with_supercategories_and_training_counts(tmp_path):
    root = write_inat(tmp_path / "inat")
    assert detect_formats(root) == ["inat"]
    info = resolve_dataset(root)
    assert (info.task, info.format, info.num_classes) == ("multiclass", "inat", 4)
    assert info.class_names == [c["name"] for c in CATEGORIES] and info.category_ids == [0, 1, 2, 5]
    assert info.supercategories == ["Aves", "Insecta", "Plantae"]
    assert info.class_supercategory == [2, 0, 0, 1]
    assert info.class_counts == [4, 1, 2, 3]
    train = create_dataset(info, "train", transform=lambda img: torch.tensor(img.size))
    assert train.labels == [0] * 4 + [1] + [2] * 2 + [3] * 3
    assert train.supercategory_ids == [2] * 4 + [0] * 3 + [1] * 3
    image, label = train[4]
    assert image.tolist() == [24, 20] and label == 1
    val = create_dataset(info, "val")
    assert val.labels == [0, 1, 2, 3] and val.class_counts == [1, 1, 1, 1]


def test_inat_2021_names_and_the_mini_training_split(tmp_path):
    root = write_inat(tmp_path / "inat21", year="", mini=True)
    info = resolve_dataset(root)
    assert info.class_counts == [4, 1, 2, 3] and sorted(info.splits) == ["train", "train_mini", "val"]
    assert len(create_dataset(info, "train_mini")) == 4
    mini = resolve_dataset(root, train_split="train_mini")
    assert mini.split_names == {"train": "train_mini", "val": "val"} and mini.class_counts == [1, 1, 1, 1]
    with pytest.raises(DataError, match=r"missing the iNaturalist test file in .*inat21 \(expected .*/test<year>.json"):
        resolve_dataset(root, val_split="test")


def test_long_tail_metrics_from_the_dataset_info(tmp_path):
    info = resolve_dataset(write_inat(tmp_path / "inat"))
    val = create_dataset(info, "val")
    metrics = LongTailMetrics(info.num_classes, info.class_counts, info.class_supercategory, info.supercategories,
                              many_shot=3, few_shot=2)  # many: 4 images; medium: 2, 3; few: 1
    labels = torch.tensor(val.labels)
    logits = torch.nn.functional.one_hot(labels, 4).float()
    logits[1] = torch.tensor([1.0, 0, 0, 0])  # the few-shot class's image is missed
    metrics.update(logits, labels)
    out = metrics.compute()
    assert out["top1"] == 75.0 and out["top1_many"] == 100.0 and out["top1_medium"] == 100.0 and out["top1_few"] == 0.0
    assert out["top1/Aves"] == 50.0 and out["top1/Plantae"] == 100.0 and out["top1/Insecta"] == 100.0


def test_class_balanced_sampler_draws_classes_equally(tmp_path):
    info = resolve_dataset(write_inat(tmp_path / "inat"))
    train = create_dataset(info, "train")
    sampler = class_balanced_sampler(train.labels, num_samples=20000, generator=torch.Generator().manual_seed(0))
    drawn = Counter(train.labels[i] for i in sampler)
    assert all(abs(drawn[c] / 20000 - 0.25) < 0.02 for c in range(4))  # plain sampling: 0.4, 0.1, 0.2, 0.3
    again = class_balanced_sampler(train.labels, generator=torch.Generator().manual_seed(0))
    assert len(list(again)) == len(train) and list(again) != []
    with pytest.raises(DataError, match="class-balanced sampling needs a non-empty training set"):
        class_balanced_sampler([])


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "mutate,split,pattern",
    [
        (lambda r: _edit(r / "train2017.json", lambda d: d["categories"][1].pop("supercategory")), "train",
         r"train2017.json: every category needs an integer 'id', a 'name' and a 'supercategory'"),
        (lambda r: _edit(r / "val2017.json", lambda d: d["annotations"].append({"id": 9, "image_id": 500, "category_id": 1})),
         "val", r"val2017.json: image 500 has annotations of two categories \(expected one category per image\)"),
        (lambda r: _edit(r / "val2017.json", lambda d: d["annotations"].pop(2)), "val",
         r"val2017.json: image 502 \(train_val_images/Aves/Turdus migratorius/.*\.jpg\) has no annotation"),
        (lambda r: _edit(r / "val2017.json", lambda d: d["annotations"][0].update(category_id=77)), "val",
         r"val2017.json: annotation 500 refers to unknown category id 77"),
        (lambda r: _edit(r / "val2017.json", lambda d: d["annotations"][0].update(image_id=4)), "val",
         r"val2017.json: annotation 500 refers to unknown image id 4"),
        (lambda r: _edit(r / "val2017.json", lambda d: d.pop("images")), "val",
         r"val2017.json is not an iNaturalist annotation file: no list under 'images'"),
        (lambda r: _edit(r / "train2017.json", lambda d: d.update(images=[], annotations=[])), "train",
         r"train2017.json lists no images"),
        (lambda r: (r / "train2018.json").write_text("{}"), "train",
         r"has 2 iNaturalist files for the train split \(train2017.json, train2018.json\)"),
        (lambda r: (r / "train2017.json").write_text("[not json"), "train", r"cannot read .*train2017.json as JSON"),
    ],
)
def test_malformed_inat_gives_one_line_errors(tmp_path, mutate, split, pattern):
    root = write_inat(tmp_path / "inat")
    mutate(root)
    with pytest.raises(DataError, match=pattern) as error:
        create_dataset(resolve_dataset(root, format="inat"), split)
    assert "\n" not in str(error.value)
