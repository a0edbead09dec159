"""Turn ``--data`` (nothing, a built-in name, or a folder) into a :class:`DatasetInfo` and datasets."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from noah.data.digits import (
    CLASS_NAMES, DEFAULT_IMAGE_SIZE, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, GENERATOR_VERSION, generate_digit_scenes,
)
from noah.data.folders import ImageFileDataset, coco_samples, image_folder_samples, read_coco_categories
from noah.errors import ConfigError, DataError

__all__ = ["BUILTIN_DATASETS", "DatasetInfo", "resolve_dataset", "create_dataset", "default_cache_dir"]

#: built-in dataset name -> (digit-scene variant, description)
BUILTIN_DATASETS: dict[str, str] = {
    "digits": "digit scenes, one handwritten digit per 224x224 cluttered canvas; 10 classes (multi-class)",
    "digits-multilabel": "digit scenes with 1-4 distinct digits and their boxes, COCO format; 10 labels (multi-label)",
}
_VARIANTS = {"digits": "multiclass", "digits-multilabel": "multilabel"}
TASKS = ("multiclass", "multilabel")


@dataclass
class DatasetInfo:
    """What ``resolve_dataset`` found: the task, the format, the classes and where the splits are.

    ``splits`` maps ``"train"``/``"val"`` to a folder (image folders) or to
    ``(instances json, image folder)`` (COCO).
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


def default_cache_dir() -> Path:
    """Where built-in datasets are generated: ``$NOAH_CACHE`` or ``~/.cache/noah``."""
    return Path(os.environ.get("NOAH_CACHE") or Path.home() / ".cache" / "noah")


def _builtin(name: str, cache_dir: Path, seed: int, num_train: int, num_val: int, image_size: int) -> Path:
    """The cached built-in dataset, generated into a temporary folder and renamed into place."""
    key = f"{name}-v{GENERATOR_VERSION}-seed{seed}-{num_train}x{num_val}-{image_size}px"
    final = cache_dir / key
    if (final / "info.json").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    # a killed generator leaves only a .tmp-* folder, which is never read
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache_dir))
    try:
        generate_digit_scenes(tmp / "data", _VARIANTS[name], seed, num_train, num_val, image_size)
        try:
            os.rename(tmp / "data", final)
        except OSError:
            if not (final / "info.json").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _coco_splits(root: Path) -> dict[str, tuple[Path, Path]]:
    """``split -> (instances json, image folder)`` for COCO-layout folders, or ``{}``."""
    splits = {}
    for split in ("train", "val"):
        candidates = sorted((root / "annotations").glob(f"instances_{split}*.json")) + sorted(root.glob(f"instances_{split}*.json"))
        if not candidates:
            continue
        if len(candidates) > 1:
            names = ", ".join(str(p.relative_to(root)) for p in candidates)
            raise DataError(f"{root} has {len(candidates)} COCO annotation files for the {split} split ({names}); "
                            "expected one: move the others out")
        json_path = candidates[0]
        suffix = json_path.stem[len("instances_"):]  # "train2014", "train", ...
        image_dir = next((d for d in (root / suffix, root / split, root / "images" / suffix) if d.is_dir()), root)
        splits[split] = (json_path, image_dir)
    return splits


def _has_class_folders(split_dir: Path) -> bool:
    return split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())


def resolve_dataset(
    data: str | os.PathLike | None,
    task: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    num_train: int | None = None,
    num_val: int | None = None,
    image_size: int | None = None,
) -> DatasetInfo:
    """Find out what ``data`` is; built-ins are generated (and cached) on first use.

    ``None`` means the built-in ``"digits"``. A folder is an image folder (``ROOT/train/<class>``
    and ``ROOT/val/<class>``: multi-class) or COCO (``ROOT/annotations/instances_{train,val}*.json``
    with images in ``ROOT/<json suffix>``: multi-label); an explicit ``task`` picks between them.
    ``num_train``/``num_val``/``image_size`` size the built-in scenes only.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    name = "digits" if data is None else os.fspath(data)
    if name in BUILTIN_DATASETS:
        size = image_size or DEFAULT_IMAGE_SIZE
        root = _builtin(name, Path(cache_dir) if cache_dir else default_cache_dir(), seed,
                        num_train or DEFAULT_NUM_TRAIN, num_val or DEFAULT_NUM_VAL, size)
        if task is not None and task != ("multiclass" if _VARIANTS[name] == "multiclass" else "multilabel"):
            raise DataError(f"the built-in dataset {name!r} is {_VARIANTS[name]}, not {task}")
        info = _resolve_folder(root, None, name)
        info.image_size = size
        return info
    root = Path(name)
    if not root.exists():
        builtins = ", ".join(BUILTIN_DATASETS)
        raise DataError(f"data folder not found: {root} (expected a folder or a built-in dataset: {builtins})")
    if not root.is_dir():
        raise DataError(f"--data must be a folder, got the file {root}")
    return _resolve_folder(root, task, name)


def _resolve_folder(root: Path, task: str | None, name: str) -> DatasetInfo:
    coco = _coco_splits(root)
    folders = _has_class_folders(root / "train")
    if task is None:
        task = "multilabel" if coco else "multiclass"
    if task == "multilabel":
        if set(coco) != {"train", "val"}:
            raise DataError(
                f"{root} has no COCO annotations for both splits "
                "(expected annotations/instances_train*.json and annotations/instances_val*.json)"
            )
        categories = read_coco_categories(coco["train"][0])
        if not categories:
            raise DataError(f"{coco['train'][0]} lists no categories")
        return DatasetInfo(
            name=name, task=task, format="coco", root=root, num_classes=len(categories),
            class_names=[n for _, n in categories], splits=dict(coco), category_ids=[i for i, _ in categories],
        )
    if not folders:
        raise DataError(f"{root} is not an image folder (expected {root}/train/<class>/<images> and {root}/val/<class>/<images>)")
    if not (root / "val").is_dir():
        raise DataError(f"missing folder {root / 'val'} (expected {root}/val/<class>/<images>)")
    _, classes = image_folder_samples(root / "train")
    return DatasetInfo(
        name=name, task=task, format="imagefolder", root=root, num_classes=len(classes), class_names=classes,
        splits={"train": root / "train", "val": root / "val"},
    )


def create_dataset(info: DatasetInfo, split: str, transform: Callable | None = None, on_bad_image: str = "error") -> Dataset:
    """The ``split`` (``"train"``/``"val"``) of ``info`` as ``(transform(image), target)`` items.

    Targets are class indices (multi-class) or float32 multi-hot tensors ``(num_classes,)``
    (multi-label). The dataset has ``samples``, ``classes`` and ``skipped`` (see ImageFileDataset).
    """
    if split not in info.splits:
        raise DataError(f"{info.root} has no {split!r} split (has: {', '.join(info.splits)})")
    if info.format == "coco":
        json_path, image_dir = info.splits[split]
        samples = coco_samples(json_path, image_dir, info.category_ids)
        if not samples:
            raise DataError(f"{json_path} lists no images")
    else:
        samples, _ = image_folder_samples(info.splits[split], info.class_names)
    return ImageFileDataset(samples, info.class_names, transform, on_bad_image)
