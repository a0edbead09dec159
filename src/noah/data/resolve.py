"""Turn ``--data`` (nothing, a built-in name, or a folder) into a :class:`DatasetInfo` and datasets.

Formats (``FORMATS``: name -> task) and what detects them in a folder ``ROOT``:

* ``voc`` (multi-label): ``Annotations/`` and ``ImageSets/Main/`` in ROOT, ROOT/VOC*/ or
  ROOT/VOCdevkit/VOC*/;
* ``inat`` (multi-class, long-tailed): ``ROOT/train[year].json`` (or ``train_mini``) and
  ``ROOT/val[year].json``;
* ``market1501`` (re-identification): ``bounding_box_train/`` in ROOT or one folder below;
* ``coco`` (multi-label): ``ROOT/annotations/instances_<split>*.json``;
* ``imagefolder`` (multi-class): ``ROOT/<split>/<class>/<images>``.

The first format found in that order wins, unless ``format`` names one, or ``task`` rules
formats out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from noah.data.builtins import BUILTIN_DATASETS, BUILTINS, builtin_root, default_cache_dir
from noah.data.folders import ImageFileDataset, coco_samples, image_folder_samples, read_coco_categories
from noah.data.inat import INatCategories, INatDataset, class_counts, find_inat_files, inat_categories, inat_samples, load_inat_json
from noah.data.market1501 import MARKET_FOLDERS, ReIDEvalDataset, ReIDTrainDataset, find_market_root, market_images
from noah.data.voc import VOCDataset, check_voc_images, find_voc_root, read_split_ids, voc_classes, voc_split_files
from noah.errors import ConfigError, DataError
from noah.targets import DISTRACTOR_ID, JUNK_ID

__all__ = [
    "BUILTIN_DATASETS", "DatasetInfo", "FORMATS", "TASKS", "create_dataset", "default_cache_dir", "detect_formats", "resolve_dataset",
]

#: data format -> the task it is
FORMATS: dict[str, str] = {
    "imagefolder": "multiclass", "coco": "multilabel", "voc": "multilabel", "inat": "multiclass", "market1501": "reid",
}
TASKS = ("multiclass", "multilabel", "reid")
_DETECTION_ORDER = ("voc", "inat", "market1501", "coco", "imagefolder")
_TASK_DEFAULT_FORMAT = {"multiclass": "imagefolder", "multilabel": "coco", "reid": "market1501"}


@dataclass
class DatasetInfo:
    """What ``resolve_dataset`` found: the task, the format, the classes and where the splits are.

    ``splits`` maps every split name that :func:`create_dataset` accepts to where it is. The roles
    ``"train"`` and ``"val"`` (re-ID: ``"train"``, ``"query"``, ``"gallery"``) are always there;
    other names of the dataset's own (VOC ``"test"``, iNaturalist ``"train_mini"``) too, unless
    they are a role's name. ``split_names`` maps each role to the dataset's name for that split
    (VOC2007: ``{"train": "trainval", "val": "test"}``).

    For iNaturalist, ``supercategories``, ``class_supercategory`` (per class) and ``class_counts``
    (training images per class) feed :class:`noah.metrics.LongTailMetrics`. For re-ID, classes
    are the training person ids.
    """

    name: str
    task: str
    format: str
    root: Path
    num_classes: int
    class_names: list[str]
    image_size: int | None = None
    splits: dict[str, object] = field(default_factory=dict)
    category_ids: list[int] = field(default_factory=list)
    split_names: dict[str, str] = field(default_factory=dict)
    supercategories: list[str] = field(default_factory=list)
    class_supercategory: list[int] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)


def resolve_dataset(
    data: str | os.PathLike | None,
    task: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    num_train: int | None = None,
    num_val: int | None = None,
    image_size: int | None = None,
    format: str | None = None,
    train_split: str | None = None,
    val_split: str | None = None,
) -> DatasetInfo:
    """Find out what ``data`` is; built-ins are generated (and cached) on first use.

    ``None`` means the built-in ``"digits"``. A folder's format is detected (see the module
    docstring) unless ``format`` names it; ``task`` keeps detection to that task's formats.
    ``train_split``/``val_split`` pick the dataset's splits for the train and val roles (VOC:
    ``trainval``/``test`` when the test split has annotations, else ``train``/``val``; image
    folders and COCO: ``train``/``val``; iNaturalist: ``train``/``val``, or ``train_mini``).
    ``num_train``/``num_val``/``image_size`` size the built-ins only.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown data format {format!r}; expected one of {', '.join(FORMATS)}")
    if format is not None and task is not None and FORMATS[format] != task:
        raise ConfigError(f"the {format} format is {FORMATS[format]}, not {task}")
    name = "digits" if data is None else os.fspath(data)
    if name in BUILTINS:
        builtin_format = BUILTINS[name].format
        if task is not None and task != FORMATS[builtin_format]:
            raise DataError(f"the built-in dataset {name!r} is {FORMATS[builtin_format]}, not {task}")
        if format is not None and format != builtin_format:
            raise DataError(f"the built-in dataset {name!r} is in the {builtin_format} format, not {format}")
        root, size = builtin_root(name, cache_dir, seed, num_train, num_val, image_size)
        info = _RESOLVERS[builtin_format](root, name, train_split, val_split)
        info.image_size = size
        return info
    root = Path(name)
    if not root.exists():
        builtins = ", ".join(BUILTINS)
        raise DataError(f"data folder not found: {root} (expected a folder or a built-in dataset: {builtins})")
    if not root.is_dir():
        raise DataError(f"--data must be a folder, got the file {root}")
    if format is None:
        found = [f for f in detect_formats(root) if task is None or FORMATS[f] == task]
        if found:
            format = found[0]
        elif task is None:
            raise DataError(
                f"{root} is not an image folder ({root}/train/<class>/<images> and {root}/val/<class>/<images>) "
                "nor any other layout noah detects (COCO, Pascal VOC, iNaturalist, Market-1501; see --format)"
            )
        else:
            format = _TASK_DEFAULT_FORMAT[task]  # its resolver says what is missing
    return _RESOLVERS[format](root, name, train_split, val_split)


def detect_formats(root: Path) -> list[str]:
    """The formats whose layout ``root`` has, in detection order."""
    checks: dict[str, Callable[[], bool]] = {
        "voc": lambda: find_voc_root(root) is not None,
        "inat": lambda: _inat_detected(find_inat_files(root)),
        "market1501": lambda: find_market_root(root) is not None,
        "coco": lambda: bool(_coco_splits(root, ("train", "val"))),
        "imagefolder": lambda: _has_class_folders(root / "train"),
    }
    return [name for name in _DETECTION_ORDER if checks[name]()]


# ------------------------------------------------------------------------------------- formats


def _has_class_folders(split_dir: Path) -> bool:
    return split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())


def _coco_splits(root: Path, names: tuple[str, ...]) -> dict[str, tuple[Path, Path]]:
    """``split -> (instances json, image folder)`` for the COCO-layout splits of ``names`` found."""
    splits = {}
    for split in names:
        candidates = sorted((root / "annotations").glob(f"instances_{split}*.json")) + sorted(root.glob(f"instances_{split}*.json"))
        if not candidates:
            continue
        if len(candidates) > 1:
            names_found = ", ".join(str(p.relative_to(root)) for p in candidates)
            raise DataError(f"{root} has {len(candidates)} COCO annotation files for the {split} split ({names_found}); "
                            "expected one: move the others out")
        json_path = candidates[0]
        suffix = json_path.stem[len("instances_"):]  # "train2014", "train", ...
        image_dir = next((d for d in (root / suffix, root / split, root / "images" / suffix) if d.is_dir()), root)
        splits[split] = (json_path, image_dir)
    return splits


def _role_splits(train_split: str | None, val_split: str | None, default: tuple[str, str]) -> dict[str, str]:
    return {"train": train_split or default[0], "val": val_split or default[1]}


def _resolve_imagefolder(root: Path, name: str, train_split: str | None, val_split: str | None) -> DatasetInfo:
    roles = _role_splits(train_split, val_split, ("train", "val"))
    train_dir, val_dir = root / roles["train"], root / roles["val"]
    if not _has_class_folders(train_dir):
        raise DataError(f"{root} is not an image folder (expected {train_dir}/<class>/<images> and {val_dir}/<class>/<images>)")
    if not val_dir.is_dir():
        raise DataError(f"missing folder {val_dir} (expected {val_dir}/<class>/<images>)")
    _, classes = image_folder_samples(train_dir)
    return DatasetInfo(
        name=name, task="multiclass", format="imagefolder", root=root, num_classes=len(classes), class_names=classes,
        splits={"train": train_dir, "val": val_dir}, split_names=roles,
    )


def _resolve_coco(root: Path, name: str, train_split: str | None, val_split: str | None) -> DatasetInfo:
    roles = _role_splits(train_split, val_split, ("train", "val"))
    found = _coco_splits(root, tuple(roles.values()))
    if set(found) != set(roles.values()):
        raise DataError(
            f"{root} has no COCO annotations for both splits "
            f"(expected annotations/instances_{roles['train']}*.json and annotations/instances_{roles['val']}*.json)"
        )
    categories = read_coco_categories(found[roles["train"]][0])
    if not categories:
        raise DataError(f"{found[roles['train']][0]} lists no categories")
    return DatasetInfo(
        name=name, task="multilabel", format="coco", root=root, num_classes=len(categories),
        class_names=[n for _, n in categories], splits={role: found[split] for role, split in roles.items()},
        category_ids=[i for i, _ in categories], split_names=roles,
    )


def _voc_split_is_annotated(voc_root: Path, split_file: Path) -> bool:
    """Whether the first image of a split has an annotation file (VOC2012's test split has none)."""
    ids = read_split_ids(split_file)
    return (voc_root / "Annotations" / f"{ids[0]}.xml").is_file()


def _resolve_voc(root: Path, name: str, train_split: str | None, val_split: str | None) -> DatasetInfo:
    voc_root = find_voc_root(root)
    if voc_root is None:
        raise DataError(f"{root} is not a Pascal VOC folder (expected Annotations/, ImageSets/Main/ and JPEGImages/ "
                        "in it, in VOC2007/ or in VOCdevkit/VOC2007/)")
    check_voc_images(voc_root)
    files = voc_split_files(voc_root)
    if not files:
        raise DataError(f"{voc_root / 'ImageSets' / 'Main'} has no split files (expected train.txt, val.txt, trainval.txt, test.txt)")
    with_test = "test" in files and "trainval" in files and _voc_split_is_annotated(voc_root, files["test"])
    roles = _role_splits(train_split, val_split, ("trainval", "test") if with_test else ("train", "val"))
    for split in roles.values():
        if split not in files:
            raise DataError(f"{voc_root} has no VOC split {split!r} (expected ImageSets/Main/{split}.txt; "
                            f"splits found: {', '.join(files)})")
        read_split_ids(files[split])  # an empty split is an error now rather than at the first epoch
    classes = voc_classes(voc_root, roles["train"])
    splits: dict[str, object] = {split: (voc_root, split) for split in files if split not in roles}
    splits.update({role: (voc_root, split) for role, split in roles.items()})
    return DatasetInfo(
        name=name, task="multilabel", format="voc", root=root, num_classes=len(classes), class_names=classes,
        splits=splits, split_names=roles,
    )


def _inat_detected(files: dict[str, Path]) -> bool:
    return "val" in files and ("train" in files or "train_mini" in files)


def _resolve_inat(root: Path, name: str, train_split: str | None, val_split: str | None) -> DatasetInfo:
    files = find_inat_files(root)
    roles = _role_splits(train_split, val_split, ("train", "val"))
    for split in roles.values():
        if split not in files:
            raise DataError(f"missing the iNaturalist {split} file in {root} (expected {root}/{split}<year>.json, "
                            f"e.g. {split}2017.json; found: {', '.join(p.name for p in files.values()) or 'none'})")
    train_json = files[roles["train"]]
    coco = load_inat_json(train_json)
    categories = inat_categories(coco, train_json)
    counts = class_counts(inat_samples(coco, train_json, root, categories.ids), len(categories.ids))
    splits: dict[str, object] = {split: path for split, path in files.items() if split not in roles}
    splits.update({role: files[split] for role, split in roles.items()})
    return DatasetInfo(
        name=name, task="multiclass", format="inat", root=root, num_classes=len(categories.ids),
        class_names=categories.names, splits=splits, category_ids=categories.ids, split_names=roles,
        supercategories=categories.supercategories, class_supercategory=categories.class_supercategory,
        class_counts=counts,
    )


def _resolve_market(root: Path, name: str, train_split: str | None, val_split: str | None) -> DatasetInfo:
    if train_split is not None or val_split is not None:
        raise ConfigError("Market-1501 has fixed splits (bounding_box_train, query, bounding_box_test); "
                          "train_split/val_split do not apply")
    market_root = find_market_root(root)
    if market_root is None:
        raise DataError(f"{root} is not a Market-1501 folder (expected {', '.join(f + '/' for f in MARKET_FOLDERS.values())} "
                        "in it or in one folder below)")
    splits = {role: market_root / folder for role, folder in MARKET_FOLDERS.items()}
    for folder in splits.values():
        if not folder.is_dir():
            raise DataError(f"missing folder {folder} (a Market-1501 folder holds {', '.join(MARKET_FOLDERS.values())})")
    person_ids = sorted({pid for _, pid, _ in market_images(splits["train"]) if pid not in (JUNK_ID, DISTRACTOR_ID)})
    if not person_ids:
        raise DataError(f"{splits['train']} holds only junk (-1) and distractor (0000) images; training needs person ids")
    return DatasetInfo(
        name=name, task="reid", format="market1501", root=root, num_classes=len(person_ids),
        class_names=[f"{pid:04d}" for pid in person_ids], splits=dict(splits),
        split_names={role: folder for role, folder in MARKET_FOLDERS.items()},
    )


_RESOLVERS: dict[str, Callable[[Path, str, str | None, str | None], DatasetInfo]] = {
    "imagefolder": _resolve_imagefolder, "coco": _resolve_coco, "voc": _resolve_voc, "inat": _resolve_inat,
    "market1501": _resolve_market,
}


def create_dataset(
    info: DatasetInfo,
    split: str,
    transform: Callable | None = None,
    on_bad_image: str = "error",
    difficult: str = "ignore",
) -> Dataset:
    """The ``split`` of ``info`` (a name in ``info.splits``) as ``(transform(image), target)`` items.

    Targets: a class index (multi-class; re-ID ``train``: the identity label); a float32
    ``(num_classes,)`` multi-hot tensor (multi-label; VOC difficult-only pairs are
    :data:`~noah.targets.IGNORE_TARGET` unless ``difficult="positive"``); an int64 ``[person id,
    camera]`` tensor (re-ID ``query`` and ``gallery``). Every dataset has ``samples``, ``classes``
    and ``skipped`` (see ImageFileDataset) and its format's extras (``labels``,
    ``supercategory_ids``, ``camera_ids``, ...).
    """
    if split not in info.splits:
        raise DataError(f"{info.root} has no {split!r} split (has: {', '.join(info.splits)})")
    where = info.splits[split]
    if info.format == "coco":
        json_path, image_dir = where
        samples = coco_samples(json_path, image_dir, info.category_ids)
        if not samples:
            raise DataError(f"{json_path} lists no images")
        return ImageFileDataset(samples, info.class_names, transform, on_bad_image)
    if info.format == "voc":
        voc_root, name = where
        return VOCDataset(voc_root, name, info.class_names, transform, difficult, on_bad_image)
    if info.format == "inat":
        categories = INatCategories(info.category_ids, info.class_names, info.supercategories, info.class_supercategory)
        return INatDataset(where, where.parent, categories, transform, on_bad_image)
    if info.format == "market1501":
        if split == "train":
            dataset = ReIDTrainDataset(where, transform, on_bad_image)
            if dataset.classes != info.class_names:
                raise DataError(f"{where} changed since it was read: its person ids differ from the {info.num_classes} found then")
            return dataset
        return ReIDEvalDataset(where, transform, on_bad_image)
    samples, _ = image_folder_samples(where, info.class_names)
    return ImageFileDataset(samples, info.class_names, transform, on_bad_image)
