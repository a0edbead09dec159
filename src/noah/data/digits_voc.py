"""Built-in ``digits-voc``: the multi-label digit scenes written as a Pascal VOC2007 folder.

Layout, as the VOC2007 tars unpack::

    ROOT/VOCdevkit/VOC2007/JPEGImages/<id>.jpg           ids 000001, 000002, ...
                           Annotations/<id>.xml          one <object> per digit: name "0".."9",
                                                         <difficult>, <bndbox> (1-based pixels)
                           ImageSets/Main/{train,val,trainval,test}.txt
                           ImageSets/Main/<class>_<split>.txt   1 / -1 / 0 (difficult only)
    ROOT/info.json

``num_train`` scenes form ``trainval`` (alternately ``train`` and ``val``), drawn from the
training scans; ``num_val`` scenes form ``test``, drawn from the disjoint validation scans (see
:func:`noah.data.digits.split_digit_pools`). Each scene holds 1-4 distinct digits
(:func:`noah.data.digits.render_scene`). A digit whose ink is less than
``DIFFICULT_HEIGHT`` (0.37) of the canvas tall is marked ``difficult``: the smallest sixth or so
of the digits. They are only somewhat smaller than the rest, not much harder to see; the flag is
there so that the whole difficult-object path runs on real files. Deterministic in ``seed``.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from noah.data.digits import CLASS_NAMES, MIN_IMAGE_SIZE, render_scene, scene_digits, split_digit_pools
from noah.errors import ConfigError

__all__ = [
    "DEFAULT_IMAGE_SIZE", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "DIFFICULT_HEIGHT", "GENERATOR_VERSION", "generate_digits_voc",
]

GENERATOR_VERSION = 1
DEFAULT_NUM_TRAIN = 800
DEFAULT_NUM_VAL = 400
DEFAULT_IMAGE_SIZE = 128
DIFFICULT_HEIGHT = 0.37
_STREAM = 2  # random streams of this generator: [seed, _STREAM, split, index]
_JPEG_QUALITY = 90


def _annotation_xml(image_id: str, size: int, placed: list[tuple[int, list[int]]]) -> ET.ElementTree:
    """A VOC2007-style annotation: one <object> per digit with its ink box as 1-based corners."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "NOAH digits-voc"
    dims = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(dims, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for digit, (x, y, w, h) in placed:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASS_NAMES[digit]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if h < DIFFICULT_HEIGHT * size else "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree, space="\t")
    return tree


def generate_digits_voc(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Path:
    """Write ``num_train`` trainval and ``num_val`` test scenes in VOC2007 layout under ``root``
    (which must not exist yet); ``root/info.json`` is written last. Same arguments, same bytes."""
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if num_train < 2 or num_val < 1:
        raise ConfigError(f"digits-voc needs num_train >= 2 (train and val) and num_val >= 1, got {num_train} and {num_val}")
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    pools = split_digit_pools(seed)
    # image id -> {class index: 1 (some plain object) or 0 (difficult objects only)}
    labels: dict[str, dict[int, int]] = {}
    members: dict[str, list[str]] = {"train": [], "val": [], "trainval": [], "test": []}
    for split_code, (pool, count) in enumerate(((pools["train"], num_train), (pools["val"], num_val))):
        for index in range(count):
            image_id = f"{len(labels) + 1:06d}"
            rng = np.random.default_rng([seed, _STREAM, split_code, index])
            placed: list[tuple[int, list[int]]] = []
            while not placed:
                image, placed = render_scene(rng, pool, scene_digits(rng, "multilabel", index), image_size)
            image.save(voc / "JPEGImages" / f"{image_id}.jpg", quality=_JPEG_QUALITY)
            tree = _annotation_xml(image_id, image_size, placed)
            tree.write(voc / "Annotations" / f"{image_id}.xml", encoding="utf-8")
            labels[image_id] = {}
            for obj in tree.getroot().iter("object"):
                digit = CLASS_NAMES.index(obj.findtext("name"))
                labels[image_id][digit] = max(labels[image_id].get(digit, 0), int(obj.findtext("difficult") == "0"))
            if split_code == 0:
                members["trainval"].append(image_id)
                members["train" if index % 2 == 0 else "val"].append(image_id)
            else:
                members["test"].append(image_id)
    main = voc / "ImageSets" / "Main"
    for split, ids in members.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for digit, name in enumerate(CLASS_NAMES):
            lines = (f"{i} {labels[i].get(digit, -1):2d}\n" for i in ids)
            (main / f"{name}_{split}.txt").write_text("".join(lines))
    info = {
        "generator": "noah.data.digits_voc", "version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
        "num_val": num_val, "image_size": image_size, "difficult_height": DIFFICULT_HEIGHT,
        "source": "sklearn.datasets.load_digits scans; trainval from the training pool, test from the validation pool",
    }
    (root / "info.json").write_text(json.dumps(info, indent=2))
    return root
