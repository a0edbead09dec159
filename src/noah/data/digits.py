"""Built-in "digit scenes": a download-free dataset made from scikit-learn's handwritten digits.

scikit-learn ships 1,797 real 8x8 scans of handwritten digits (``sklearn.datasets.load_digits``,
the test part of the UCI optdigits set). A classifier on those tiny images says nothing about a
*spatial* head such as NOAH, so this module pastes upscaled digits into large cluttered scenes:

- canvas ``image_size`` x ``image_size`` RGB (224 by default, so a stride-32 backbone ends on a
  7x7 map; the CPU demo uses 64 px with an output-stride-8 backbone, an 8x8 map), a two-colour
  gradient background with smooth blotches and sparse speckles;
- each digit upscaled with bicubic interpolation to 30-55 % of the canvas height, a random aspect
  ratio and slight rotation, in a random hue whose *luminance* differs clearly from the ground
  (dark on light or light on dark: with hue-only contrast, small CNNs from scratch stayed at
  chance for many epochs), at a random position;
- clutter: random pen strokes, translucent blobs and *fragments* of other digits (a corner of at
  most 5x5 of the 8x8 scan, too little to read as a whole digit); some clutter is drawn over the
  digits.

The variants are written as ordinary files, so the loaders that read ImageNet and COCO folders are
the ones that train on them:

- ``multiclass``: one digit per scene, ``ROOT/{train,val}/<digit>/<split>_<index>.png``;
- ``multilabel``: 1-4 distinct digits per scene, ``ROOT/{train,val}/<split>_<index>.png`` plus
  ``ROOT/annotations/instances_{train,val}.json`` in COCO instances format (categories 1..10 named
  "0".."9", one box per digit);
- ``crowd`` and ``crowd-multilabel``: the same two layouts in a setting where *where* things are
  matters (:data:`CROWD_STYLE`): smaller digits (22-32 % of the canvas height, about 14-20 px at
  64 px) among many digit fragments drawn at the digit's own scale and ink, which look like
  digits locally; ``crowd-multilabel`` has 2-4 of them per scene. A head that averages every
  position alike sees mostly clutter.

The 1,797 scans are split per class into disjoint train/validation pools (80/20) before anything is
drawn, and fragments come from the same pool as the scene, so no validation scene shows ink of a
training scan. Everything is derived from ``seed`` (one random stream per scene), so the same
arguments give byte-identical files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from noah.data.scenes import Placed, check_scene_sizes, write_scenes
from noah.errors import ConfigError

__all__ = [
    "GENERATOR_VERSION",
    "DIGIT_VARIANTS",
    "SceneStyle",
    "DEFAULT_STYLE",
    "CROWD_STYLE",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "split_digit_pools",
    "render_scene",
    "generate_digit_scenes",
]

# Bump whenever the drawing changes: it is part of the cache key, so old caches are not reused.
GENERATOR_VERSION = 4
DIGIT_VARIANTS = ("multiclass", "multilabel", "crowd", "crowd-multilabel")
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_VAL = 500
DEFAULT_IMAGE_SIZE = 224
MIN_IMAGE_SIZE = 32
VAL_FRACTION = 0.2
MAX_DIGITS_PER_SCENE = 4
CLASS_NAMES = [str(d) for d in range(10)]

# Geometry and clutter, as fractions of the canvas side so that small test canvases look alike.
_DIGIT_HEIGHT = (0.30, 0.55)
_FRAGMENT_HEIGHT = (24 / 224, 72 / 224)
_CLUTTER_ITEMS = (3, 7)


@dataclass(frozen=True)
class DigitPools:
    """The 8x8 scans (float32 in [0, 1], shape ``(n, 8, 8)``) and labels of one split."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray  # positions in ``load_digits()``, to prove the pools are disjoint

    def of_class(self, digit: int) -> np.ndarray:
        return np.flatnonzero(self.labels == digit)


def split_digit_pools(seed: int) -> dict[str, DigitPools]:
    """Split the 1,797 scikit-learn scans per class into disjoint ``train``/``val`` pools (80/20)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng([seed, 7919])
    train_idx, val_idx = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_val = int(round(len(members) * VAL_FRACTION))
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    pools = {}
    for split, parts in (("train", train_idx), ("val", val_idx)):
        idx = np.sort(np.concatenate(parts))
        pools[split] = DigitPools(images[idx], labels[idx], idx)
    return pools


# --------------------------------------------------------------------------------------------
# Drawing. Each layer is an alpha mask ("L" image) through which a flat colour is pasted onto the
# canvas: PIL blends in C, which keeps a 224x224 scene around a millisecond. There is deliberately
# no per-pixel noise: it would make every PNG ~4x larger and ~10x slower to compress.


def alpha_mask(alpha: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(alpha * 255).astype(np.uint8), mode="L")


def upscale_scan(scan: np.ndarray, height: int, width: int, angle: float) -> np.ndarray:
    """Bicubic upscale of an ink map (values in [0, 1]) to (height, width), rotated by ``angle``°."""
    img = Image.fromarray(scan.astype(np.float32), mode="F")
    img = img.resize((max(width, 1), max(height, 1)), Image.Resampling.BICUBIC)
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0.0)
    return np.clip(np.asarray(img), 0.0, 1.0)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Two-colour linear gradient plus smooth blotches: a coarse 6x6 field, bicubic-upscaled."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    theta = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, 6)
    t = ramp[None, :] * math.cos(theta) + ramp[:, None] * math.sin(theta) + 0.5
    field = c0 + (c1 - c0) * t[..., None] + rng.normal(0, 18, size=(6, 6, 3))
    coarse = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), mode="RGB")
    return coarse.resize((size, size), Image.Resampling.BICUBIC)


_LUMA = np.array([0.299, 0.587, 0.114])


def _ink_colour(rng: np.random.Generator, background: np.ndarray, contrast: float = 110.0) -> tuple[int, int, int]:
    """A random colour whose luminance differs from ``background``'s by at least ``contrast``
    (of 255): dark ink on light ground or light ink on dark, in any hue, so shape, not colour,
    carries the digit."""
    target_dark = float(background @ _LUMA) > 127.5
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        gap = float(background @ _LUMA) - float(colour @ _LUMA)
        if (gap if target_dark else -gap) >= contrast:
            return tuple(int(c) for c in colour)
    grey = 0.0 if target_dark else 255.0
    return (int(grey),) * 3


def _speckles(rng: np.random.Generator, canvas: Image.Image) -> None:
    """Sparse salt-and-pepper pixels (about 0.3% of the canvas)."""
    size = canvas.width
    n = size * size // 300
    xy = rng.integers(0, size, size=(n, 2))
    shades = rng.integers(0, 256, size=n)
    draw = ImageDraw.Draw(canvas)
    for (x, y), v in zip(xy.tolist(), shades.tolist()):
        draw.point((x, y), fill=(v, v, v))


@dataclass(frozen=True)
class SceneStyle:
    """How a scene is drawn: sizes as fractions of the canvas side, counts before scaling.

    ``digit_height``: range of a digit's height; ``fragment_height``: range of the height a whole
    8x8 scan would have at a fragment's scale; ``clutter_items``: range of clutter items on a
    112 px or larger canvas; ``clutter``: the kinds drawn, uniformly (repeat one to favour it);
    ``digits_per_scene``: range (inclusive) for multi-label scenes.
    """

    digit_height: tuple[float, float] = _DIGIT_HEIGHT
    fragment_height: tuple[float, float] = _FRAGMENT_HEIGHT
    clutter_items: tuple[int, int] = _CLUTTER_ITEMS
    clutter: tuple[str, ...] = ("stroke", "blob", "stroke", "blob", "fragment")  # fragments are the digit-like kind
    digits_per_scene: tuple[int, int] = (1, MAX_DIGITS_PER_SCENE)


#: the original scenes (``multiclass``, ``multilabel``, and the VOC / iNat miniatures)
DEFAULT_STYLE = SceneStyle()
#: small digits among many look-alike fragments at their own scale (``crowd``, ``crowd-multilabel``)
CROWD_STYLE = SceneStyle(digit_height=(0.22, 0.32), fragment_height=(0.22, 0.32), clutter_items=(8, 13),
                         clutter=("fragment", "fragment", "fragment", "stroke"), digits_per_scene=(2, 4))
_VARIANT_STYLES = {"multiclass": DEFAULT_STYLE, "multilabel": DEFAULT_STYLE, "crowd": CROWD_STYLE,
                   "crowd-multilabel": CROWD_STYLE}
_MULTICLASS_VARIANTS = ("multiclass", "crowd")


def _stroke(rng: np.random.Generator, size: int, pool: DigitPools, style: SceneStyle) -> tuple[Image.Image, int, int]:
    """A random thin polyline (2-4 segments) as an alpha mask and its top-left corner."""
    extent = int(rng.integers(max(size // 10, 4), max(size // 3, 6)))
    patch = Image.new("L", (extent, extent), 0)
    points = [tuple(rng.uniform(0, extent - 1, size=2)) for _ in range(int(rng.integers(3, 6)))]
    width = int(rng.integers(1, max(2, size // 56) + 1))
    ImageDraw.Draw(patch).line(points, fill=int(rng.integers(128, 256)), width=width, joint="curve")
    top, left = rng.integers(-extent // 3, size - extent // 2, size=2)
    return patch, int(top), int(left)


def _blob(rng: np.random.Generator, size: int, pool: DigitPools, style: SceneStyle) -> tuple[Image.Image, int, int]:
    """A translucent filled ellipse as an alpha mask and its top-left corner."""
    h, w = (int(v) for v in rng.integers(max(size // 16, 3), max(size // 4, 5), size=2))
    patch = Image.new("L", (w, h), 0)
    ImageDraw.Draw(patch).ellipse((0, 0, w - 1, h - 1), fill=int(rng.integers(40, 128)))
    top, left = rng.integers(-h // 3, size - h // 2), rng.integers(-w // 3, size - w // 2)
    return patch, int(top), int(left)


def _fragment(rng: np.random.Generator, size: int, pool: DigitPools, style: SceneStyle) -> tuple[Image.Image, int, int]:
    """A corner of at most 5x5 cells of a random scan, upscaled like a digit: ink but no digit."""
    scan = pool.images[rng.integers(len(pool.images))]
    fh, fw = (int(v) for v in rng.integers(3, 6, size=2))
    r0, c0 = int(rng.integers(0, 9 - fh)), int(rng.integers(0, 9 - fw))
    cell = rng.uniform(*style.fragment_height) * size / 8
    alpha = upscale_scan(scan[r0 : r0 + fh, c0 : c0 + fw], round(fh * cell), round(fw * cell), rng.uniform(-30, 30))
    h, w = alpha.shape
    top, left = rng.integers(-h // 3, size - h // 2), rng.integers(-w // 3, size - w // 2)
    return alpha_mask(alpha * rng.uniform(0.5, 1.0)), int(top), int(left)


_CLUTTER_KINDS = {"stroke": _stroke, "blob": _blob, "fragment": _fragment}


def digit_alpha(rng: np.random.Generator, size: int, scan: np.ndarray,
                height_range: tuple[float, float] = _DIGIT_HEIGHT) -> tuple[np.ndarray, list[int]]:
    """Upscaled, slightly rotated digit with random contrast, and the box of its ink in that patch.

    The scan gets a one-cell empty border before upscaling, so the ink fades to zero inside the
    patch: cropping the patch right at the ink would cut it off in straight lines, a rectangle
    around every digit that a model could use instead of the digit's shape. Returns the alpha patch
    (trimmed where alpha < 0.005, invisible) and ``[x, y, w, h]`` of alpha > 0.1 within it.
    """
    height = rng.uniform(*height_range) * size
    width = height * rng.uniform(0.7, 1.0)
    padded = np.pad(scan, 1)
    alpha = upscale_scan(padded, round(height * 10 / 8), round(width * 10 / 8), rng.uniform(-15, 15))
    alpha = np.clip(alpha * rng.uniform(1.2, 1.6), 0.0, 1.0) * rng.uniform(0.85, 1.0)

    def extent(threshold: float) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero(alpha.max(axis=1) > threshold), np.flatnonzero(alpha.max(axis=0) > threshold)

    rows, cols = extent(0.005)
    alpha = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    rows, cols = extent(0.1)
    return alpha, [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], margin: int) -> bool:
    x, y, w, h = box
    return any(
        x < bx + bw + margin and bx < x + w + margin and y < by + bh + margin and by < y + h + margin
        for bx, by, bw, bh in boxes
    )


def render_scene(
    rng: np.random.Generator, pool: DigitPools, digits: list[int], image_size: int, style: SceneStyle = DEFAULT_STYLE
) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """Draw one RGB scene of ``image_size`` x ``image_size`` with each digit of ``digits`` once,
    sized and cluttered as ``style`` says.

    Digits do not overlap each other; a digit that finds no free spot in 30 tries is left out.
    Returns the image and, per drawn digit, ``(digit, [x, y, w, h])``: the box around its ink
    (alpha > 0.1), which always lies inside the canvas.
    """
    size = image_size
    canvas = _background(rng, size)
    mean_colour = np.asarray(canvas.resize((1, 1), Image.Resampling.BOX), dtype=np.float64)[0, 0]
    n_clutter = int(rng.integers(*style.clutter_items) * min(1.0, size / 112) + 1)
    kinds = rng.integers(0, len(style.clutter), size=n_clutter)
    n_before = int(rng.integers(n_clutter // 2, n_clutter + 1))

    def draw_clutter(kind_ids: np.ndarray) -> None:
        for kind in kind_ids:
            mask, top, left = _CLUTTER_KINDS[style.clutter[kind]](rng, size, pool, style)
            canvas.paste(_ink_colour(rng, mean_colour), (left, top, left + mask.width, top + mask.height), mask)

    draw_clutter(kinds[:n_before])
    placed: list[tuple[int, list[int]]] = []
    boxes: list[tuple[int, int, int, int]] = []
    for digit in digits:
        scan = pool.images[rng.choice(pool.of_class(digit))]
        alpha, (ix, iy, iw, ih) = digit_alpha(rng, size, scan, style.digit_height)
        h, w = alpha.shape
        if h > size or w > size:
            continue
        for _attempt in range(30):  # a free spot for the whole patch, so the ink box stays on the canvas
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            if not _overlaps((x + ix, y + iy, iw, ih), boxes, margin=2):
                break
        else:  # no free spot on a crowded canvas: leave this digit out (it is not labelled either)
            continue
        box = (x + ix, y + iy, iw, ih)
        local = np.asarray(canvas.crop((x + ix, y + iy, x + ix + iw, y + iy + ih)).resize((1, 1), Image.Resampling.BOX),
                           dtype=np.float64)
        canvas.paste(_ink_colour(rng, local[0, 0]), (x, y, x + w, y + h), alpha_mask(alpha))
        boxes.append(box)
        placed.append((int(digit), list(box)))
    draw_clutter(kinds[n_before:])
    _speckles(rng, canvas)
    return canvas, placed


def scene_digits(rng: np.random.Generator, variant: str, index: int) -> list[int]:
    if variant in _MULTICLASS_VARIANTS:  # classes cycle, so every split is balanced and holds all ten
        return [index % 10]
    low, high = _VARIANT_STYLES[variant].digits_per_scene
    count = int(rng.integers(low, high + 1))
    return [int(d) for d in rng.choice(10, size=count, replace=False)]


def generate_digit_scenes(
    root: str | os.PathLike,
    variant: str = "multiclass",
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Path:
    """Write a digit-scene dataset to ``root`` (which must not exist yet) and return it.

    ``multiclass`` and ``crowd``: ``root/{train,val}/<digit>/<split>_<i>.png``, scene ``i``
    showing digit ``i % 10`` (a scene whose digit found no free spot is redrawn, so every scene
    holds it). ``multilabel`` and ``crowd-multilabel``: ``root/{train,val}/<split>_<i>.png`` plus
    ``root/annotations/instances_{train,val}.json`` (COCO instances: categories 1..10 named
    "0".."9", one box per digit). Also writes
    ``root/info.json`` with the arguments and the generator version. Same arguments, same bytes.
    """
    if variant not in DIGIT_VARIANTS:
        raise ConfigError(f"unknown digit-scene variant {variant!r}; expected one of {', '.join(DIGIT_VARIANTS)}")
    check_scene_sizes(num_train, num_val, image_size, MIN_IMAGE_SIZE, "digit")
    pools = split_digit_pools(seed)

    def draw(rng: np.random.Generator, split: str, index: int) -> tuple[Image.Image, Placed]:
        placed: Placed = []
        while not placed:  # an empty scene (nothing fitted) is drawn again from the same stream
            image, placed = render_scene(rng, pools[split], scene_digits(rng, variant, index), image_size,
                                         _VARIANT_STYLES[variant])
        return image, placed

    info = {
        "generator": "noah.data.digits", "version": GENERATOR_VERSION, "variant": variant, "seed": seed,
        "num_train": num_train, "num_val": num_val, "image_size": image_size,
        "source": "sklearn.datasets.load_digits (1,797 8x8 scans), split 80/20 per class into disjoint pools",
    }
    return write_scenes(Path(root), draw, CLASS_NAMES, variant in _MULTICLASS_VARIANTS, seed,
                        {"train": num_train, "val": num_val}, image_size,
                        {"description": "NOAH digit scenes ({split})", "version": str(GENERATOR_VERSION)}, "digit", info)
