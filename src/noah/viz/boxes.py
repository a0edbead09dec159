"""Object boxes of COCO-format data (the built-in ``digits-multilabel`` scenes among them), as masks
in the frame of the model's input.

A box is drawn as a mask on the original image and sent through the *same* evaluation transform
as the image (resize, crop, whatever the run uses), then thresholded: so the mask lands where the
object is in what the model saw, with no separate arithmetic for each kind of resize and crop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, ImageDraw

from noah.data import DatasetInfo
from noah.errors import DataError

__all__ = ["Scene", "read_scenes", "box_mask", "mask_in_input_frame"]


@dataclass
class Scene:
    """One annotated image: its file and the ``[x, y, w, h]`` pixel boxes of each class present
    (class index -> boxes)."""

    path: str
    boxes: dict[int, list[list[float]]]


def read_scenes(info: DatasetInfo, split: str = "val") -> list[Scene]:
    """The images of ``split`` that have at least one box, with their boxes by class index.

    Raises :class:`DataError` if the data is not COCO-format or its annotations carry no boxes.
    """
    if info.format != "coco" or split not in info.splits:
        raise DataError(f"{info.name} is not COCO-format data with boxes (box scores need e.g. the built-in "
                        "digits-multilabel scenes)")
    json_path, image_dir = info.splits[split]
    try:
        coco = json.loads(Path(json_path).read_text())
        images = {int(img["id"]): img for img in coco["images"]}
        column = {cid: i for i, cid in enumerate(info.category_ids)}
        scenes: dict[int, Scene] = {}
        for ann in coco["annotations"]:
            bbox = ann.get("bbox")
            if not bbox or len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
                continue
            image = images[int(ann["image_id"])]
            scene = scenes.setdefault(int(image["id"]), Scene(str(Path(image_dir) / image["file_name"]), {}))
            scene.boxes.setdefault(column[int(ann["category_id"])], []).append([float(v) for v in bbox])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read the boxes of {json_path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if not scenes:
        raise DataError(f"{json_path} has no boxes (annotations need a 'bbox' [x, y, w, h])")
    return [scenes[i] for i in sorted(scenes)]


def box_mask(size: tuple[int, int], boxes: Sequence[Sequence[float]]) -> Image.Image:
    """An 8-bit mask of ``size`` ``(width, height)``: 255 inside any of the ``[x, y, w, h]`` boxes."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for x, y, w, h in boxes:
        # pixel (i, j) covers [i, i + 1): a box [x, x + w) covers pixels x .. x + w - 1
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=255)
    return mask


def mask_in_input_frame(mask: Image.Image, transform: Callable, mean: Sequence[float],
                        std: Sequence[float]) -> torch.Tensor:
    """``mask`` (an ``L`` image) sent through the evaluation ``transform`` and un-normalised:
    a bool ``(H, W)`` tensor in the model input's frame."""
    as_rgb = Image.merge("RGB", (mask, mask, mask))
    x = transform(as_rgb)
    channel = x[0] * float(std[0]) + float(mean[0])
    return channel > 0.5
