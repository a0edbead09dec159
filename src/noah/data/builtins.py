"""The built-in datasets: digit-scan miniatures of each supported format, generated on first
use into a cache folder (atomically: a temporary folder renamed into place)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from noah.data import digits, digits_inat, digits_reid, digits_voc, shapes
from noah.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "Builtin", "BUILTINS", "builtin_root", "default_cache_dir"]


@dataclass(frozen=True)
class Builtin:
    """One built-in dataset: what it is, its on-disk format, its generator and default sizes.

    ``generate(root, seed, num_train, num_val, image_size)`` writes the dataset to ``root``
    (which must not exist) and ``root/info.json`` last. ``version`` is part of the cache key.
    """

    description: str
    format: str
    generate: Callable[[Path, int, int, int, int], Path]
    version: int
    num_train: int
    num_val: int
    image_size: int


def _scenes(variant: str) -> Callable[[Path, int, int, int, int], Path]:
    return lambda root, seed, num_train, num_val, size: digits.generate_digit_scenes(root, variant, seed, num_train, num_val, size)


BUILTINS: dict[str, Builtin] = {
    "digits": Builtin(
        "digit scenes, one handwritten digit per 224x224 cluttered canvas; 10 classes (multi-class)",
        "imagefolder", _scenes("multiclass"), digits.GENERATOR_VERSION,
        digits.DEFAULT_NUM_TRAIN, digits.DEFAULT_NUM_VAL, digits.DEFAULT_IMAGE_SIZE),
    "digits-multilabel": Builtin(
        "digit scenes with 1-4 distinct digits and their boxes, COCO format; 10 labels (multi-label)",
        "coco", _scenes("multilabel"), digits.GENERATOR_VERSION,
        digits.DEFAULT_NUM_TRAIN, digits.DEFAULT_NUM_VAL, digits.DEFAULT_IMAGE_SIZE),
    "digits-crowd": Builtin(
        "one small digit among many look-alike digit fragments, 64x64 canvas; 10 classes (multi-class; where matters)",
        "imagefolder", _scenes("crowd"), digits.GENERATOR_VERSION,
        digits.DEFAULT_NUM_TRAIN, digits.DEFAULT_NUM_VAL, 64),
    "digits-crowd-multilabel": Builtin(
        "2-4 small distinct digits among look-alike fragments, 64x64 canvas, COCO format; 10 labels (multi-label)",
        "coco", _scenes("crowd-multilabel"), digits.GENERATOR_VERSION,
        digits.DEFAULT_NUM_TRAIN, digits.DEFAULT_NUM_VAL, 64),
    "shapes": Builtin(
        "odd-shape scenes: the class is the colour of the one square among circles and triangles of any colour, "
        "64x64; 10 classes (multi-class; where matters, fast to learn)",
        "imagefolder", lambda root, seed, n_train, n_val, size: shapes.generate_shape_scenes(
            root, "multiclass", seed, n_train, n_val, size), shapes.GENERATOR_VERSION,
        shapes.DEFAULT_NUM_TRAIN, shapes.DEFAULT_NUM_VAL, shapes.DEFAULT_IMAGE_SIZE),
    "shapes-multilabel": Builtin(
        "odd-shape scenes: the labels are the colours of 1-3 squares among circles and triangles of any colour, "
        "64x64, COCO format; 10 labels (multi-label)",
        "coco", lambda root, seed, n_train, n_val, size: shapes.generate_shape_scenes(
            root, "multilabel", seed, n_train, n_val, size), shapes.GENERATOR_VERSION,
        shapes.DEFAULT_NUM_TRAIN, shapes.DEFAULT_NUM_VAL, shapes.DEFAULT_IMAGE_SIZE),
    "digits-voc": Builtin(
        "digit scenes in Pascal VOC2007 layout (trainval/test, small digits marked difficult); 10 labels (multi-label)",
        "voc", digits_voc.generate_digits_voc, digits_voc.GENERATOR_VERSION,
        digits_voc.DEFAULT_NUM_TRAIN, digits_voc.DEFAULT_NUM_VAL, digits_voc.DEFAULT_IMAGE_SIZE),
    "digits-inat": Builtin(
        "iNaturalist 2017 layout, 100 long-tailed classes = digit x style, supercategory = digit (fine-grained)",
        "inat", digits_inat.generate_digits_inat, digits_inat.GENERATOR_VERSION,
        digits_inat.DEFAULT_NUM_TRAIN, digits_inat.DEFAULT_NUM_VAL, digits_inat.DEFAULT_IMAGE_SIZE),
    "digits-reid": Builtin(
        "Market-1501 layout, identities = individual digit scans seen by 6 differently rendering cameras (re-ID)",
        "market1501", digits_reid.generate_digits_reid, digits_reid.GENERATOR_VERSION,
        digits_reid.DEFAULT_NUM_TRAIN, digits_reid.DEFAULT_NUM_VAL, digits_reid.DEFAULT_IMAGE_SIZE),
}
#: built-in dataset name -> description
BUILTIN_DATASETS: dict[str, str] = {name: b.description for name, b in BUILTINS.items()}


def default_cache_dir() -> Path:
    """Where built-in datasets are generated: ``$NOAH_CACHE`` or ``~/.cache/noah``."""
    return Path(os.environ.get("NOAH_CACHE") or Path.home() / ".cache" / "noah")


def builtin_root(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    num_train: int | None = None,
    num_val: int | None = None,
    image_size: int | None = None,
) -> tuple[Path, int]:
    """The cached folder of built-in ``name`` (generated first if missing) and its image size.

    Sizes default to the built-in's own; each combination of seed and sizes is its own cache entry.
    A killed generator leaves only a ``.tmp-*`` folder, which is never read.
    """
    if name not in BUILTINS:
        raise ConfigError(f"unknown built-in dataset {name!r}; expected one of {', '.join(BUILTINS)}")
    spec = BUILTINS[name]
    size = image_size or spec.image_size
    num_train, num_val = num_train or spec.num_train, num_val or spec.num_val
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = f"{name}-v{spec.version}-seed{seed}-{num_train}x{num_val}-{size}px"
    final = cache / key
    if (final / "info.json").is_file():
        return final, size
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache))
    try:
        spec.generate(tmp / "data", seed, num_train, num_val, size)
        try:
            os.rename(tmp / "data", final)
        except OSError:
            if not (final / "info.json").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, size
