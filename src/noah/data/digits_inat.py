"""Built-in ``digits-inat``: a long-tailed, fine-grained miniature in iNaturalist 2017 layout.

Classes are the 100 combinations of a digit (the supercategory: the coarse "what") and a style
(the fine-grained "which kind"): one of 5 background patterns (plain, stripes, diagonal, checks,
dots) times 2 ink palettes (warm: reds to yellows, cool: greens to blues). Telling the ten
styles of one digit apart takes the pattern and the ink hue; telling the digits apart takes the
shape. Per image the scan, position, size, rotation, pattern phase and period, and the exact
colours vary.

The training counts follow an exponential long tail (the usual "imbalance factor" profile of
long-tail benchmarks): the class of tail rank ``r`` (a seeded permutation of the 100) gets
``round(150 * (3 / 150) ** (r / 99))`` images, from 150 down to 3 (imbalance 50, 3,795 images);
``num_train`` scales that profile (at least one image per class). With the usual thresholds
(> 100 many-shot, 20-100 medium, < 20 few) the default has 11 many-, 41 medium- and 48 few-shot
classes. Validation is balanced: ``num_val / 100`` images per class (at least one).

Layout, as the iNaturalist 2017 archives unpack::

    ROOT/train2017.json, ROOT/val2017.json         images, annotations, categories (ids 0..99,
                                                   name "3 stripes warm", supercategory "3")
    ROOT/train_val_images/<supercategory>/<name>/<split>_<index>.jpg
    ROOT/info.json

Training images are drawn from the training scans, validation images from the disjoint
validation scans (:func:`noah.data.digits.split_digit_pools`). Deterministic in ``seed``.
"""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from noah.data.digits import CLASS_NAMES, MIN_IMAGE_SIZE, alpha_mask, digit_alpha, split_digit_pools
from noah.errors import ConfigError

__all__ = [
    "DEFAULT_IMAGE_SIZE", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "GENERATOR_VERSION", "PALETTES", "PATTERNS",
    "class_names", "generate_digits_inat", "long_tail_counts",
]

GENERATOR_VERSION = 1
PATTERNS = ("plain", "stripes", "diagonal", "checks", "dots")
#: palette -> ink hue range in degrees (a hue of 360+ wraps around)
PALETTES = {"warm": (350.0, 410.0), "cool": (130.0, 240.0)}
NUM_CLASSES = 10 * len(PATTERNS) * len(PALETTES)
HEAD_COUNT, TAIL_COUNT = 150, 3
DEFAULT_IMAGE_SIZE = 128
DEFAULT_NUM_VAL = 500
_STREAM = 3
_JPEG_QUALITY = 90


def class_names() -> list[tuple[str, str]]:
    """``(name, supercategory)`` of class ids ``0..99``: id = ``digit * 10 + style``."""
    styles = [(pattern, palette) for pattern in PATTERNS for palette in PALETTES]
    return [(f"{d} {pattern} {palette}", CLASS_NAMES[d]) for d in range(10) for pattern, palette in styles]


def long_tail_counts(seed: int, scale: float = 1.0) -> list[int]:
    """Training images per class id: the exponential profile from 150 to 3 over a seeded order."""
    order = np.random.default_rng([seed, _STREAM, 99]).permutation(NUM_CLASSES)
    counts = [0] * NUM_CLASSES
    for rank, class_id in enumerate(order.tolist()):
        base = HEAD_COUNT * (TAIL_COUNT / HEAD_COUNT) ** (rank / (NUM_CLASSES - 1))
        counts[class_id] = max(1, round(base * scale))
    return counts


DEFAULT_NUM_TRAIN = sum(long_tail_counts(0))


def _pattern(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pattern: str, size: int, colour: tuple[int, ...]) -> None:
    period = max(4, int(size * rng.uniform(0.07, 0.12)))
    phase = int(rng.integers(0, period))
    width = max(1, period // 3)
    if pattern == "stripes":
        for y in range(phase - period, size, period):
            draw.rectangle((0, y, size, y + width - 1), fill=colour)
    elif pattern == "diagonal":
        for x in range(phase - size, size + period, period):
            draw.line((x, size, x + size, 0), fill=colour, width=width)
    elif pattern == "checks":
        for y in range(phase - period, size, period):
            for x in range(phase - period, size, period):
                if ((x + y) // period) % 2 == 0:
                    draw.rectangle((x, y, x + period // 2, y + period // 2), fill=colour)
    elif pattern == "dots":
        radius = max(1, period // 4)
        for y in range(phase - period, size + period, period):
            for x in range(phase - period, size + period, period):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _hsv(hue_degrees: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_degrees % 360) / 360, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def render_inat_image(rng: np.random.Generator, scan: np.ndarray, pattern: str, palette: str, size: int) -> Image.Image:
    """One ``size`` x ``size`` image: a light ground with ``pattern`` in a mid tone, the digit
    ``scan`` in a dark ink of ``palette``, and a few thin distractor strokes."""
    ground = _hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.25), rng.uniform(0.85, 1.0))
    canvas = Image.new("RGB", (size, size), ground)
    draw = ImageDraw.Draw(canvas)
    shade = rng.uniform(0.72, 0.82)
    _pattern(draw, rng, pattern, size, tuple(int(c * shade) for c in ground))
    for _ in range(int(rng.integers(0, 3))):
        points = [tuple(rng.uniform(0, size, size=2)) for _ in range(3)]
        draw.line(points, fill=_hsv(rng.uniform(0, 360), 0.3, rng.uniform(0.4, 0.7)), width=max(1, size // 100))
    alpha, _ = digit_alpha(rng, size, scan)
    h, w = alpha.shape
    h, w = min(h, size), min(w, size)
    x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    low, high = PALETTES[palette]
    ink = _hsv(rng.uniform(low, high), rng.uniform(0.7, 1.0), rng.uniform(0.45, 0.75))
    canvas.paste(ink, (x, y, x + w, y + h), alpha_mask(alpha[:h, :w]))
    return canvas


def generate_digits_inat(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Path:
    """Write the long-tailed miniature in iNaturalist 2017 layout to ``root`` (which must not
    exist yet); about ``num_train`` training and ``num_val`` validation images. Same arguments,
    same bytes."""
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if num_train < 1 or num_val < 1:
        raise ConfigError(f"digits-inat needs positive num_train and num_val, got {num_train} and {num_val}")
    root = Path(root)
    root.mkdir(parents=True)
    pools = split_digit_pools(seed)
    names = class_names()
    styles = [(pattern, palette) for pattern in PATTERNS for palette in PALETTES]
    counts = {
        "train": long_tail_counts(seed, num_train / DEFAULT_NUM_TRAIN),
        "val": [max(1, round(num_val / NUM_CLASSES))] * NUM_CLASSES,
    }
    categories = [{"id": i, "name": name, "supercategory": sup} for i, (name, sup) in enumerate(names)]
    for split_code, split in enumerate(("train", "val")):
        pool = pools[split]
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for class_id, count in enumerate(counts[split]):
            digit = class_id // len(styles)
            pattern, palette = styles[class_id % len(styles)]
            name, sup = names[class_id]
            for k in range(count):
                index = len(images)
                rng = np.random.default_rng([seed, _STREAM, split_code, index])
                scan = pool.images[rng.choice(pool.of_class(digit))]
                relative = Path("train_val_images") / sup / name / f"{split}_{index:05d}.jpg"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                render_inat_image(rng, scan, pattern, palette, image_size).save(root / relative, quality=_JPEG_QUALITY)
                images.append({"id": index, "file_name": relative.as_posix(), "width": image_size, "height": image_size})
                annotations.append({"id": index, "image_id": index, "category_id": class_id})
        data = {
            "info": {"description": f"NOAH digits-inat ({split})", "version": str(GENERATOR_VERSION)},
            "images": images, "annotations": annotations, "categories": categories,
        }
        (root / f"{split}2017.json").write_text(json.dumps(data))
    info = {
        "generator": "noah.data.digits_inat", "version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
        "num_val": num_val, "image_size": image_size, "train_counts": counts["train"],
        "source": "sklearn.datasets.load_digits scans; train from the training pool, val from the validation pool",
    }
    (root / "info.json").write_text(json.dumps(info, indent=2))
    return root
