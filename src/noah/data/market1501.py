"""Market-1501-style person re-identification.

On disk (as ``Market-1501-v15.09.15.zip`` unpacks)::

    ROOT/bounding_box_train/   training images (751 identities)
    ROOT/query/                one image per identity and camera, searched for in the gallery
    ROOT/bounding_box_test/    the gallery

Every image is named ``PPPP_cCsS_FFFFFF_NN.jpg``: person id ``PPPP`` (``-1`` junk, ``0000``
distractor), camera ``C``, sequence ``S``, frame ``FFFFFF``, box ``NN``
(e.g. ``0002_c1s1_000451_03.jpg``). Other files (``Thumbs.db``) are not images and are skipped.

Training (:class:`ReIDTrainDataset`) is identity classification: the training person ids, sorted,
become contiguous labels ``0..N-1``; junk and distractor images are left out. Evaluation
(:class:`ReIDEvalDataset`, one for ``query`` and one for ``gallery``) yields ``[person id,
camera]`` per image, what :class:`noah.metrics.ReIDMetrics` takes. Junk images (-1) are left out
of both (they would be excluded from every ranking anyway); distractors stay in the gallery.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from noah.data.folders import ImageFileDataset
from noah.errors import DataError
from noah.targets import DISTRACTOR_ID, JUNK_ID

__all__ = [
    "DISTRACTOR_ID", "JUNK_ID", "MARKET_FOLDERS", "ReIDEvalDataset", "ReIDTrainDataset", "find_market_root",
    "market_images", "parse_market_name",
]

#: split -> folder
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_NAME = re.compile(r"^(-1|\d{4})_c(\d+)s(\d+)_(\d{6})_(\d{2})\.(jpg|jpeg|png)$", re.IGNORECASE)
_EXPECTED = ("Market-1501 names PPPP_cCsS_FFFFFF_NN.jpg, e.g. 0002_c1s1_000451_03.jpg "
             "(PPPP person id, -1 junk, 0000 distractor; C camera)")


def find_market_root(root: Path) -> Path | None:
    """``root`` or its one sub-folder that holds ``bounding_box_train/``, or ``None``."""
    if (root / MARKET_FOLDERS["train"]).is_dir():
        return root
    found = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / MARKET_FOLDERS["train"]).is_dir()]
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise DataError(f"{root} holds {len(found)} re-ID dataset folders ({names}); "
                        "expected one: pass one of them as the data folder")
    return found[0] if found else None


def parse_market_name(path: Path) -> tuple[int, int]:
    """``(person id, camera)`` from a Market-1501 file name; a DataError naming the file otherwise."""
    match = _NAME.match(path.name)
    if not match:
        raise DataError(f"bad re-ID file name {path} (expected {_EXPECTED})")
    return int(match.group(1)), int(match.group(2))


def market_images(folder: Path) -> list[tuple[str, int, int]]:
    """``(path, person id, camera)`` of every image in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder} (a Market-1501 folder holds {', '.join(MARKET_FOLDERS.values())})")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise DataError(f"{folder} holds no images (expected {_EXPECTED})")
    return [(str(p), *parse_market_name(p)) for p in files]


class ReIDTrainDataset(ImageFileDataset):
    """``(transform(image), identity label)`` over ``bounding_box_train``: labels ``0..N-1`` in
    the order of the sorted person ids (``person_ids[label]``); ``camera_ids`` per sample."""

    def __init__(self, folder: str | Path, transform: Callable | None = None, on_bad_image: str = "error") -> None:
        folder = Path(folder)
        images = [(p, pid, cam) for p, pid, cam in market_images(folder) if pid not in (JUNK_ID, DISTRACTOR_ID)]
        if not images:
            raise DataError(f"{folder} holds only junk (-1) and distractor (0000) images; training needs person ids")
        self.person_ids = sorted({pid for _, pid, _ in images})
        label = {pid: i for i, pid in enumerate(self.person_ids)}
        samples = [(p, label[pid]) for p, pid, _ in images]
        super().__init__(samples, [f"{pid:04d}" for pid in self.person_ids], transform, on_bad_image)
        self.labels = [label[pid] for _, pid, _ in images]
        self.camera_ids = [cam for _, _, cam in images]


class ReIDEvalDataset(ImageFileDataset):
    """``(transform(image), tensor([person id, camera]))`` over ``query`` or ``bounding_box_test``,
    junk (-1) left out; ``person_ids`` and ``camera_ids`` per sample."""

    def __init__(self, folder: str | Path, transform: Callable | None = None, on_bad_image: str = "error") -> None:
        folder = Path(folder)
        images = [(p, pid, cam) for p, pid, cam in market_images(folder) if pid != JUNK_ID]
        if not images:
            raise DataError(f"{folder} holds only junk (-1) images")
        samples = [(p, torch.tensor([pid, cam])) for p, pid, cam in images]
        super().__init__(samples, [], transform, on_bad_image)
        self.person_ids = [pid for _, pid, _ in images]
        self.camera_ids = [cam for _, _, cam in images]
