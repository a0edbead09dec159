"""Datasets over files: ImageNet-layout image folders (multi-class) and COCO instances (multi-label)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Container, Iterator

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from noah.errors import ConfigError, DataError

__all__ = [
    "ImageFileDataset", "image_folder_samples", "coco_annotations", "coco_samples", "load_coco_json", "read_coco_categories",
    "read_image",
]


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` as RGB, fully decoded; a :class:`DataError` naming the path otherwise."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}".splitlines()[0]) from exc


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMG_EXTENSIONS


def image_folder_samples(split_dir: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, class index)`` pairs of ``split_dir/<class>/<image>`` and the class names (sorted).

    With ``classes`` given (the training classes), a folder not among them is a DataError.
    """
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir} (expected ROOT/train/<class>/... and ROOT/val/<class>/...)")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image files>)")
    if classes is None:
        classes = found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DataError(f"{split_dir} has classes that the training split lacks: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name in found:
        files = sorted(p for p in (split_dir / name).rglob("*") if _is_image(p))
        if not files:
            raise DataError(f"class folder {split_dir / name} holds no images (extensions: {', '.join(IMG_EXTENSIONS)})")
        samples.extend((str(p), index[name]) for p in files)
    return samples, classes


def load_coco_json(json_path: Path, kind: str = "a COCO instances") -> dict[str, Any]:
    """A COCO-style annotation file (``images``, ``annotations``, ``categories`` lists); ``kind``
    names the expected format in the error."""
    try:
        coco = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {json_path} as JSON: {exc}".splitlines()[0]) from exc
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(coco, dict) or not isinstance(coco.get(k), list)]
    if missing:
        raise DataError(f"{json_path} is not {kind} file: no list under {', '.join(repr(k) for k in missing)}")
    return coco


def read_coco_categories(json_path: Path) -> list[tuple[int, str]]:
    """``(category id, name)`` pairs of a COCO instances file, sorted by id."""
    coco = load_coco_json(json_path)
    try:
        return sorted((int(c["id"]), str(c["name"])) for c in coco["categories"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{json_path}: every category needs an integer 'id' and a 'name'") from exc


def coco_samples(json_path: Path, image_dir: Path, category_ids: list[int]) -> list[tuple[str, torch.Tensor]]:
    """``(path, multi-hot float32 target of len(category_ids))`` per image of a COCO instances file.

    Images without annotations are kept with an all-zero target (COCO has such images; dropping
    them would change the evaluation set).
    """
    coco = load_coco_json(json_path)
    column = {cid: i for i, cid in enumerate(category_ids)}
    try:
        images = {int(img["id"]): str(img["file_name"]) for img in coco["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{json_path}: every image needs an integer 'id' and a 'file_name'") from exc
    targets = {image_id: torch.zeros(len(category_ids)) for image_id in images}
    for image_id, category_id in coco_annotations(coco, json_path, images, column):
        targets[image_id][column[category_id]] = 1.0
    return [(str(image_dir / images[i]), targets[i]) for i in sorted(images)]


def coco_annotations(
    coco: dict[str, Any], json_path: Path, image_ids: Container[int], category_ids: Container[int]
) -> Iterator[tuple[int, int]]:
    """``(image id, category id)`` of each annotation; a DataError for one that names an image or
    category not in ``image_ids``/``category_ids`` (``json_path`` names the file)."""
    for ann in coco["annotations"]:
        try:
            image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{json_path}: every annotation needs an integer 'image_id' and 'category_id'") from exc
        if image_id not in image_ids:
            raise DataError(f"{json_path}: annotation {ann.get('id')} refers to unknown image id {image_id}")
        if category_id not in category_ids:
            raise DataError(f"{json_path}: annotation {ann.get('id')} refers to unknown category id {category_id}")
        yield image_id, category_id


class ImageFileDataset(Dataset):
    """``(transform(RGB image), target)`` over a list of ``(path, target)`` samples.

    ``on_bad_image="error"`` raises :class:`DataError` naming the path of an unreadable image;
    ``"skip"`` returns the next readable sample instead (so epoch length stays fixed and every
    rank sees the same number of batches) and flags the bad one in ``unreadable``, a
    shared-memory ``(len,)`` uint8 tensor, so that flags set in DataLoader worker processes
    reach the parent; ``skipped`` and ``bad_paths`` read it.
    """

    def __init__(
        self,
        samples: list[tuple[str, Any]],
        classes: list[str],
        transform: Callable | None = None,
        on_bad_image: str = "error",
    ) -> None:
        if on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        self.samples = samples
        self.classes = classes
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.unreadable = torch.zeros(len(samples), dtype=torch.uint8).share_memory_()

    @property
    def skipped(self) -> int:
        """How many distinct samples were found unreadable so far (in any worker process)."""
        return int(self.unreadable.sum())

    @property
    def bad_paths(self) -> list[str]:
        """Paths of the samples found unreadable so far, in sample order."""
        return [self.samples[i][0] for i in self.unreadable.nonzero().flatten().tolist()]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        for offset in range(len(self.samples)):
            position = (index + offset) % len(self.samples)
            path, target = self.samples[position]
            try:
                image = read_image(path)
            except DataError:
                if self.on_bad_image == "error":
                    raise
                self.unreadable[position] = 1
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, target.clone() if isinstance(target, torch.Tensor) else target
        raise DataError(f"no readable image among the {len(self.samples)} samples")
