"""Built-in "odd-shape" scenes: the label is a property of *one* object among look-alikes.

A small, fast setting where where-things-are decides the label, so that a head pooling every
position alike has to work for what an attentive head gets by looking in the right place:

- canvas ``image_size`` x ``image_size`` (64 by default), a low-saturation gradient background
  with smooth blotches and sparse speckles (:mod:`noah.data.digits`' background, greyed);
- objects of 14-22 % of the canvas side in ten well-separated colours (:data:`COLOURS`, each
  drawn with a small random jitter), never overlapping: **targets** are filled squares,
  **distractors** filled circles and triangles in any of the ten colours -- including the
  targets' -- so the colours present in a scene say little about the label;
- ``multiclass`` (built-in ``shapes``): one square and 3-6 distractors; the class is the square's
  colour, ``ROOT/{train,val}/<colour>/<split>_<index>.png``;
- ``multilabel`` (built-in ``shapes-multilabel``): 1-3 squares of distinct colours and 3-6
  distractors; the labels are the squares' colours, ``ROOT/{train,val}/<split>_<index>.png`` plus
  COCO instances annotations (one box per square).

Colour and shape are both features a small network learns within an epoch, so a comparison of
heads runs in minutes on a CPU; what is hard is tying the colour to the right object. Everything
is derived from ``seed`` (one random stream per scene): the same arguments give the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from noah.data.scenes import Placed, check_scene_sizes, write_scenes
from noah.errors import ConfigError

__all__ = [
    "GENERATOR_VERSION", "SHAPE_VARIANTS", "COLOURS", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "DEFAULT_IMAGE_SIZE",
    "render_shapes", "generate_shape_scenes",
]

# Bump whenever the drawing changes: it is part of the cache key, so old caches are not reused.
GENERATOR_VERSION = 1
SHAPE_VARIANTS = ("multiclass", "multilabel")
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_VAL = 500
DEFAULT_IMAGE_SIZE = 64
MIN_IMAGE_SIZE = 32
#: the ten classes: colour name -> RGB (a set of mutually distinct colours)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75), "orange": (245, 130, 48), "yellow": (255, 225, 25), "green": (60, 180, 75),
    "cyan": (70, 240, 240), "blue": (0, 130, 200), "purple": (145, 30, 180), "magenta": (240, 50, 230),
    "pink": (250, 190, 212), "brown": (170, 110, 40),
}
_NAMES = list(COLOURS)
_SIZE = (0.14, 0.22)
_DISTRACTORS = (3, 6)
_TARGETS = (1, 3)
_JITTER = 12


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A grey-ish gradient with smooth blotches (a coarse 6x6 field, bicubic-upscaled) and speckles."""
    c0, c1 = rng.uniform(40, 215, size=2)
    ramp = np.linspace(0.0, 1.0, 6)
    theta = rng.uniform(0, 2 * np.pi)
    t = np.clip(ramp[None, :] * np.cos(theta) + ramp[:, None] * np.sin(theta), 0, 1)
    field = (c0 + (c1 - c0) * t)[..., None] + rng.normal(0, 12, size=(6, 6, 3))
    canvas = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), mode="RGB").resize((size, size),
                                                                                        Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for x, y in rng.integers(0, size, size=(size * size // 300, 2)).tolist():
        v = int(rng.integers(0, 256))
        draw.point((x, y), fill=(v, v, v))
    return canvas


def _colour(rng: np.random.Generator, index: int) -> tuple[int, int, int]:
    base = np.array(COLOURS[_NAMES[index]])
    return tuple(int(c) for c in np.clip(base + rng.integers(-_JITTER, _JITTER + 1, size=3), 0, 255))


def _free_spot(rng: np.random.Generator, size: int, side: int, boxes: list[tuple[int, int, int, int]]
               ) -> tuple[int, int] | None:
    for _attempt in range(40):
        x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        if not any(x < bx + bw + 2 and bx < x + side + 2 and y < by + bh + 2 and by < y + side + 2
                   for bx, by, bw, bh in boxes):
            return x, y
    return None


def render_shapes(rng: np.random.Generator, targets: list[int], image_size: int
                  ) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """One scene with a square of each colour index in ``targets`` and 3-6 distractors.

    Returns the image and, per drawn square, ``(colour index, [x, y, w, h])``. A shape that finds
    no free spot in 40 tries is left out (a square is then not labelled either).
    """
    size = image_size
    canvas = _background(rng, size)
    draw = ImageDraw.Draw(canvas)
    boxes: list[tuple[int, int, int, int]] = []
    placed: list[tuple[int, list[int]]] = []
    distractors = int(rng.integers(_DISTRACTORS[0], _DISTRACTORS[1] + 1))
    kinds = ["square"] * len(targets) + [str(k) for k in rng.choice(["circle", "triangle"], size=distractors)]
    colours = list(targets) + [int(c) for c in rng.integers(0, len(_NAMES), size=distractors)]
    order = rng.permutation(len(kinds))  # targets are not always drawn first (first placed = most room)
    for i in order.tolist():
        side = max(4, int(round(rng.uniform(*_SIZE) * size)))
        spot = _free_spot(rng, size, side, boxes)
        if spot is None:
            continue
        x, y = spot
        fill = _colour(rng, colours[i])
        if kinds[i] == "square":
            draw.rectangle((x, y, x + side - 1, y + side - 1), fill=fill)
            placed.append((colours[i], [x, y, side, side]))
        elif kinds[i] == "circle":
            draw.ellipse((x, y, x + side - 1, y + side - 1), fill=fill)
        else:
            draw.polygon([(x + side / 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)], fill=fill)
        boxes.append((x, y, side, side))
    return canvas, placed


def _targets(rng: np.random.Generator, variant: str, index: int) -> list[int]:
    if variant == "multiclass":  # classes cycle, so every split is balanced and holds all ten
        return [index % len(_NAMES)]
    count = int(rng.integers(_TARGETS[0], _TARGETS[1] + 1))
    return [int(c) for c in rng.choice(len(_NAMES), size=count, replace=False)]


def generate_shape_scenes(
    root: str | os.PathLike,
    variant: str = "multiclass",
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Path:
    """Write an odd-shape dataset to ``root`` (which must not exist yet) and return it.

    ``multiclass``: ``root/{train,val}/<colour>/<split>_<i>.png``, scene ``i`` holding a square of
    colour ``i % 10``; ``multilabel``: ``root/{train,val}/<split>_<i>.png`` plus
    ``root/annotations/instances_{train,val}.json`` (COCO instances, categories 1..10 named after
    :data:`COLOURS`, one box per square). A scene whose squares all found no spot is drawn again
    from the same stream. Also writes ``root/info.json``. Same arguments, same bytes.
    """
    if variant not in SHAPE_VARIANTS:
        raise ConfigError(f"unknown shape-scene variant {variant!r}; expected one of {', '.join(SHAPE_VARIANTS)}")
    check_scene_sizes(num_train, num_val, image_size, MIN_IMAGE_SIZE, "class")

    def draw(rng: np.random.Generator, split: str, index: int) -> tuple[Image.Image, Placed]:
        targets = _targets(rng, variant, index)
        placed: Placed = []
        while not placed:  # no square fitted: draw again from the same stream (multi-label scenes keep,
            image, placed = render_shapes(rng, targets, image_size)  # and label, the squares that fitted)
        return image, placed

    info = {"generator": "noah.data.shapes", "version": GENERATOR_VERSION, "variant": variant, "seed": seed,
            "num_train": num_train, "num_val": num_val, "image_size": image_size}
    return write_scenes(Path(root), draw, _NAMES, variant == "multiclass", seed, {"train": num_train, "val": num_val},
                        image_size, {"description": "NOAH odd-shape scenes ({split})",
                                     "version": str(GENERATOR_VERSION)}, "colour", info)
