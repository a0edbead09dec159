"""Tiny trained runs on the built-in multi-label digit scenes, shared by the viz tests."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noah.cli import main

#: `noah train` in seconds: timm's test ResNet on 64 px scenes with an 8x8 final map, as the demo
TINY = ["--model", "test_resnet", "--image-size", "64", "--output-stride", "8", "--batch-size", "8", "--workers", "0",
        "--quiet", "--device", "cpu", "--amp", "none"]


@pytest.fixture(scope="session")
def viz_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the viz tests generate built-in datasets (NOAH_CACHE)."""
    return tmp_path_factory.mktemp("viz-cache")


@pytest.fixture(autouse=True)
def _use_viz_cache(viz_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOAH_CACHE", str(viz_cache))


def _train_tiny(output: Path, head: str, cache: Path, *extra: str) -> Path:
    """Train a tiny run on digits-multilabel into ``output``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOAH_CACHE", str(cache))
        args = ["train", "--data", "digits-multilabel", "--head", head, "--output", str(output), *TINY, *extra]
        assert main(args) == 0
    return output


@pytest.fixture
def train_tiny():
    """``train_tiny(output, head, cache, *flags)``: a run on digits-multilabel, TINY flags then ``flags``."""
    return _train_tiny


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, viz_cache: Path) -> dict[str, Path]:
    """A NOAH run and its GAP baseline, one epoch on 16 training / 6 validation scenes."""
    root = tmp_path_factory.mktemp("viz-runs")
    small = ["--data-size", "16", "6", "--epochs", "1"]
    return {head: _train_tiny(root / head, head, viz_cache, *small) for head in ("noah", "gap")}


@pytest.fixture(scope="session")
def val_images(tiny_runs: dict[str, Path], viz_cache: Path) -> list[Path]:
    """The validation scenes of the tiny runs."""
    return sorted(viz_cache.glob("digits-multilabel-*/val/*.png"))


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _check_self_contained(page: Path) -> list[bytes]:
    """Assert that ``page`` fetches nothing: every ``<img>`` is a PNG data URI, no element refers to
    another file or URL, no http(s) URL appears anywhere. Returns the embedded PNGs."""
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text, re.IGNORECASE), "the page names a URL"
    parser = _Collector()
    parser.feed(text)
    images = []
    for tag, attrs in parser.tags:
        for name in ("src", "href", "data", "srcset", "poster", "action"):
            value = attrs.get(name)
            if value is None:
                continue
            assert tag == "img" and name == "src", f"<{tag} {name}=...> refers to something outside the page"
            assert value.startswith("data:image/png;base64,"), value[:60]
            png = base64.b64decode(value.split(",", 1)[1], validate=True)
            assert png.startswith(b"\x89PNG\r\n\x1a\n")
            images.append(png)
        assert tag not in ("script", "link", "iframe", "object", "embed")
    assert len(images) == sum(tag == "img" for tag, _ in parser.tags)
    assert "@import" not in text and "url(" not in text
    return images


@pytest.fixture
def self_contained():
    """The check that an HTML page fetches nothing (returns its embedded PNGs)."""
    return _check_self_contained


def _write_coco(root: Path, boxes_per_image: list[dict[int, list[list[int]]]], names: str = "abc", size: int = 64) -> Path:
    """A COCO folder (one category per letter of ``names``, ids from 1) whose train and val images
    carry the given boxes per class index."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        images, annotations = [], []
        for i, boxes in enumerate(boxes_per_image):
            name = f"{split}_{i}.png"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / split / name)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for c, class_boxes in boxes.items():
                for box in class_boxes:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c + 1,
                                        "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        coco = {"images": images, "annotations": annotations,
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


@pytest.fixture
def make_coco():
    """Write a small COCO folder with boxes (see ``_write_coco``)."""
    return _write_coco
