"""Writing generated scenes to disk, shared by the built-in scene generators (digits, shapes).

A generator draws scene ``index`` of a split from its own random stream
(``numpy.random.default_rng([seed, split code, index])``) as an image and the labelled objects in
it; :func:`write_scenes` lays the scenes out as an ImageNet-style folder (multi-class: one object
per scene, ``ROOT/{train,val}/<class>/<split>_<index>.png``) or as COCO instances (multi-label:
``ROOT/{train,val}/<split>_<index>.png`` plus ``ROOT/annotations/instances_{train,val}.json``, one
box per object), so the loaders that read real datasets are the ones that train on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from noah.errors import ConfigError

__all__ = ["Placed", "check_scene_sizes", "write_scenes"]

#: the labelled objects of a scene: ``(class index, [x, y, w, h])`` each
Placed = list[tuple[int, list[int]]]

_SPLIT_CODES = {"train": 0, "val": 1}
# PNG level 1 is ~4x faster than the default 6 on noisy scenes and only ~10% larger.
_PNG_COMPRESS_LEVEL = 1


def check_scene_sizes(num_train: int, num_val: int, image_size: int, min_image_size: int, per: str) -> None:
    """:class:`ConfigError` unless there is a training scene per class (10) and a validation
    scene, and the canvas is at least ``min_image_size`` pixels."""
    if image_size < min_image_size:
        raise ConfigError(f"image_size must be at least {min_image_size} pixels, got {image_size}")
    if num_train < 10 or num_val < 1:
        raise ConfigError(f"num_train must be at least 10 (one scene per {per}) and num_val positive, got {num_train} "
                          f"and {num_val}")


def write_scenes(
    root: Path,
    draw: Callable[[np.random.Generator, str, int], tuple[Image.Image, Placed]],
    class_names: Sequence[str],
    multiclass: bool,
    seed: int,
    counts: dict[str, int],
    image_size: int,
    coco_info: dict[str, str],
    supercategory: str,
    info: dict[str, Any],
) -> Path:
    """Draw ``counts[split]`` scenes per split with ``draw(rng, split, index)`` and write them to
    ``root``; then ``root/info.json`` (``info``). A multi-class scene's class is its first object's.
    ``coco_info["description"]`` may hold ``{split}``."""
    for split, count in counts.items():
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for index in range(count):
            image, placed = draw(np.random.default_rng([seed, _SPLIT_CODES[split], index]), split, index)
            name = f"{split}_{index:05d}.png"
            if multiclass:
                relative = Path(split) / class_names[placed[0][0]] / name
            else:
                relative = Path(split) / name
                images.append({"id": index + 1, "file_name": name, "width": image_size, "height": image_size})
                for label, box in placed:
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                        "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
                    })
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative, compress_level=_PNG_COMPRESS_LEVEL)
        if not multiclass:
            coco = {
                "info": {**coco_info, "description": coco_info["description"].format(split=split)},
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i + 1, "name": n, "supercategory": supercategory} for i, n in enumerate(class_names)],
            }
            (root / "annotations").mkdir(parents=True, exist_ok=True)
            (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    (root / "info.json").write_text(json.dumps(info, indent=2))
    return root
