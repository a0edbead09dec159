"""Tiny on-disk datasets and a tiny model config for the engine tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: flags that make `noah train` take seconds on a CPU: timm's 4-stage test ResNet at 64 px
TINY = ["--model", "test_resnet", "--image-size", "64", "--batch-size", "4", "--workers", "0", "--quiet",
        "--device", "cpu", "--amp", "none"]


def _scene(rng: np.random.Generator, colours: list[int], size: int) -> Image.Image:
    """Noise with one bright square per class in ``colours`` (class c tints channel c % 3)."""
    a = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    for c in colours:
        y, x = rng.integers(0, size - size // 3, 2)
        a[y : y + size // 3, x : x + size // 3, c % 3] = 255 - 40 * (c // 3)
    return Image.fromarray(a)


def make_image_folder(root: Path, classes: int = 3, per_class: tuple[int, int] = (6, 3), size: int = 64) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: a multi-class ImageNet-layout folder."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _scene(rng, [c], size).save(folder / f"{i}.png")
    return root


def make_coco_folder(root: Path, classes: int = 4, counts: tuple[int, int] = (12, 7), size: int = 64) -> Path:
    """``root/{train,val}/*.png`` + ``root/annotations/instances_{train,val}.json`` (COCO format)."""
    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": f"thing{k}"} for k in range(classes)]
    for split, n in zip(("train", "val"), counts):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            present = sorted(rng.choice(classes, size=int(rng.integers(1, 3)), replace=False).tolist())
            name = f"{split}_{i}.png"
            _scene(rng, present, size).save(root / split / name)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for c in present:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c + 1,
                                    "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0})
        with open(root / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="session")
def coco_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_folder(tmp_path_factory.mktemp("coco"))


def noah_subprocess(args: list[str], cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m noah ARGS`` in a fresh interpreter and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "noah", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          **kwargs)


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)


@pytest.fixture
def run_noah():
    return noah_subprocess
