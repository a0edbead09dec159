"""iNaturalist 2017 / 2018 / 2021 as fine-grained, long-tailed multi-class classification.

On disk (as the competition archives unpack)::

    ROOT/train2017.json, ROOT/val2017.json          (2018: train2018.json ...; 2021: train.json,
    ROOT/train_val_images/<supercategory>/<name>/... train_mini.json, val.json)

Each JSON is COCO-style: ``images`` (``id``, ``file_name`` relative to ROOT), ``annotations``
(``image_id``, ``category_id``: one category per image) and ``categories`` (``id``, ``name``,
``supercategory``). Classes are the categories sorted by id; each sample also carries its
class's supercategory index (supercategories sorted by name).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from noah.data.folders import ImageFileDataset, coco_annotations, load_coco_json
from noah.errors import DataError

__all__ = ["INatCategories", "INatDataset", "class_counts", "find_inat_files", "inat_categories", "inat_samples", "load_inat_json"]

_SPLIT_FILE = re.compile(r"^(train|train_mini|val)(\d{4})?\.json$")
_KIND = "an iNaturalist annotation"


def find_inat_files(root: Path) -> dict[str, Path]:
    """``split -> json`` for ``ROOT/{train,train_mini,val}[year].json``; a DataError if one split
    has several (``train2017.json`` beside ``train2018.json``)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.json")):
        match = _SPLIT_FILE.match(path.name)
        if match:
            found.setdefault(match.group(1), []).append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{root} has {len(paths)} iNaturalist files for the {split} split "
                            f"({', '.join(p.name for p in paths)}); expected one: move the others out")
    return {split: paths[0] for split, paths in found.items()}


def load_inat_json(json_path: Path) -> dict[str, Any]:
    """An iNaturalist JSON, checked to have the ``images``/``annotations``/``categories`` lists."""
    return load_coco_json(json_path, _KIND)


@dataclass
class INatCategories:
    """The classes of an iNaturalist file: category ``ids`` and ``names`` (sorted by id),
    ``supercategories`` (sorted names) and ``class_supercategory`` (supercategory index per class)."""

    ids: list[int]
    names: list[str]
    supercategories: list[str]
    class_supercategory: list[int]


def inat_categories(coco: dict[str, Any], json_path: Path) -> INatCategories:
    """The categories of a loaded iNaturalist JSON (``json_path`` names it in errors)."""
    try:
        rows = sorted((int(c["id"]), str(c["name"]), str(c["supercategory"])) for c in coco["categories"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{json_path}: every category needs an integer 'id', a 'name' and a 'supercategory'") from exc
    if not rows:
        raise DataError(f"{json_path} lists no categories")
    supercategories = sorted({r[2] for r in rows})
    index = {name: i for i, name in enumerate(supercategories)}
    return INatCategories([r[0] for r in rows], [r[1] for r in rows], supercategories, [index[r[2]] for r in rows])


def inat_samples(coco: dict[str, Any], json_path: Path, root: Path, category_ids: list[int]) -> list[tuple[str, int]]:
    """``(ROOT/file_name, class index)`` per image of a loaded iNaturalist JSON, in image-id order."""
    column = {cid: i for i, cid in enumerate(category_ids)}
    try:
        images = {int(img["id"]): str(img["file_name"]) for img in coco["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{json_path}: every image needs an integer 'id' and a 'file_name'") from exc
    if not images:
        raise DataError(f"{json_path} lists no images")
    labels: dict[int, int] = {}
    for image_id, category_id in coco_annotations(coco, json_path, images, column):
        if labels.setdefault(image_id, column[category_id]) != column[category_id]:
            raise DataError(f"{json_path}: image {image_id} has annotations of two categories "
                            "(expected one category per image)")
    unlabelled = [i for i in images if i not in labels]
    if unlabelled:
        raise DataError(f"{json_path}: image {unlabelled[0]} ({images[unlabelled[0]]}) has no annotation "
                        f"({len(unlabelled)} such images; expected one category per image)")
    return [(str(root / images[i]), labels[i]) for i in sorted(images)]


def class_counts(samples: list[tuple[str, int]], num_classes: int) -> list[int]:
    """Images per class index."""
    counts = Counter(label for _, label in samples)
    return [counts.get(i, 0) for i in range(num_classes)]


class INatDataset(ImageFileDataset):
    """``(transform(image), class index)`` over one iNaturalist JSON.

    ``labels`` and ``supercategory_ids`` give each sample's class and supercategory index,
    ``class_counts`` the images per class in this split.
    """

    def __init__(
        self,
        json_path: str | Path,
        root: str | Path,
        categories: INatCategories,
        transform: Callable | None = None,
        on_bad_image: str = "error",
    ) -> None:
        json_path = Path(json_path)
        samples = inat_samples(load_inat_json(json_path), json_path, Path(root), categories.ids)
        super().__init__(samples, categories.names, transform, on_bad_image)
        self.labels = [label for _, label in samples]
        self.supercategory_ids = [categories.class_supercategory[label] for label in self.labels]
        self.class_counts = class_counts(samples, len(categories.ids))
