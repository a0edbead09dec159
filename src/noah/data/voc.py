"""Pascal VOC 2007 / 2012 as multi-label classification.

On disk (as the devkit tars unpack)::

    VOCdevkit/VOC2007/Annotations/<id>.xml          objects: <name>, <difficult>, <bndbox>
                      ImageSets/Main/<split>.txt     image ids, one a line (train, val, trainval, test)
                      ImageSets/Main/<class>_<split>.txt
                      JPEGImages/<id>.jpg

An image's labels are the ``name`` of its objects. A class whose objects in an image are all
marked ``difficult`` is, by default, neither positive nor negative for that image: its target is
:data:`~noah.targets.IGNORE_TARGET` (-1), which the metrics leave out (as the VOC devkit leaves
difficult objects out of AP) and a training loss must mask. ``difficult="positive"`` counts such
pairs as positive instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import torch

from noah.data.folders import ImageFileDataset
from noah.errors import ConfigError, DataError
from noah.targets import IGNORE_TARGET

__all__ = [
    "DIFFICULT_MODES", "VOCDataset", "check_voc_images", "find_voc_root", "read_split_ids", "read_voc_objects", "voc_classes",
    "voc_samples", "voc_split_files",
]

DIFFICULT_MODES = ("ignore", "positive")
_LAYOUT = "Annotations/<id>.xml, ImageSets/Main/<split>.txt and JPEGImages/<id>.jpg"


def _is_voc_year(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "ImageSets" / "Main").is_dir()


def find_voc_root(root: Path) -> Path | None:
    """The VOC year folder at or under ``root`` (``root``, ``root/VOC*``, ``root/VOCdevkit/VOC*``),
    or ``None``; a DataError when there are several (say VOC2007 and VOC2012)."""
    if _is_voc_year(root):
        return root
    found = [d for d in sorted(root.glob("VOC*")) + sorted(root.glob("VOCdevkit/VOC*")) if d.is_dir() and _is_voc_year(d)]
    if len(found) > 1:
        names = ", ".join(str(d.relative_to(root)) for d in found)
        raise DataError(f"{root} holds {len(found)} Pascal VOC folders ({names}); expected one: pass one of them as the data folder")
    return found[0] if found else None


def check_voc_images(voc_root: Path) -> None:
    """A DataError unless ``voc_root/JPEGImages`` is a folder."""
    if not (voc_root / "JPEGImages").is_dir():
        raise DataError(f"missing folder {voc_root / 'JPEGImages'} (a VOC folder holds {_LAYOUT})")


def voc_split_files(voc_root: Path) -> dict[str, Path]:
    """``split name -> ImageSets/Main/<split>.txt`` (the per-class ``<class>_<split>.txt`` left out)."""
    main = voc_root / "ImageSets" / "Main"
    return {p.stem: p for p in sorted(main.glob("*.txt")) if "_" not in p.stem}


def read_split_ids(split_file: Path) -> list[str]:
    """The image ids of a ``<split>.txt`` (first word of each non-empty line)."""
    try:
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the VOC split file {split_file}: {exc}".splitlines()[0]) from exc
    if not ids:
        raise DataError(f"{split_file} lists no images (expected one image id per line)")
    return ids


def read_voc_objects(xml_path: Path) -> list[tuple[str, bool]]:
    """``(class name, difficult)`` of each ``<object>`` of a VOC annotation file."""
    if not xml_path.is_file():
        raise DataError(f"missing annotation file {xml_path} (expected one Annotations/<id>.xml per listed image)")
    try:
        tree = ET.parse(xml_path)
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"cannot parse {xml_path} as VOC XML: {exc}".splitlines()[0]) from exc
    objects = []
    for obj in tree.getroot().findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{xml_path}: an <object> has no <name>")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DataError(f"{xml_path}: <difficult> of a {name!r} object is {flag!r}, expected 0 or 1")
        objects.append((name, flag == "1"))
    return objects


def voc_classes(voc_root: Path, train_split: str) -> list[str]:
    """The class names, sorted: from the per-class ``ImageSets/Main/<class>_<split>.txt`` files
    when there are any (the 20 VOC classes, in their usual alphabetical order), else from the
    objects of the ``train_split`` annotations."""
    main = voc_root / "ImageSets" / "Main"
    splits = set(voc_split_files(voc_root))
    names = {p.stem.rsplit("_", 1)[0] for p in main.glob("*_*.txt") if p.stem.rsplit("_", 1)[1] in splits}
    if not names:
        for image_id in read_split_ids(main / f"{train_split}.txt"):
            names.update(name for name, _ in read_voc_objects(voc_root / "Annotations" / f"{image_id}.xml"))
    if not names:
        raise DataError(f"{voc_root}: the {train_split!r} annotations hold no objects, so there are no classes")
    return sorted(names)


def voc_samples(voc_root: Path, split: str, classes: list[str], difficult: str = "ignore") -> list[tuple[str, torch.Tensor]]:
    """``(JPEGImages/<id>.jpg, target)`` per image of ``split``; target ``(len(classes),)`` float32:
    1 positive, 0 negative, :data:`IGNORE_TARGET` for difficult-only pairs (``difficult="ignore"``)."""
    if difficult not in DIFFICULT_MODES:
        raise ConfigError(f"difficult must be one of {', '.join(DIFFICULT_MODES)}, got {difficult!r}")
    split_file = voc_root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        have = ", ".join(voc_split_files(voc_root)) or "none"
        raise DataError(f"missing VOC split file {split_file} (splits found: {have})")
    column = {name: i for i, name in enumerate(classes)}
    hard_value = float(IGNORE_TARGET) if difficult == "ignore" else 1.0
    samples = []
    for image_id in read_split_ids(split_file):
        xml_path = voc_root / "Annotations" / f"{image_id}.xml"
        target = torch.zeros(len(classes))
        for name, is_difficult in read_voc_objects(xml_path):
            if name not in column:
                raise DataError(f"{xml_path}: object class {name!r} is not one of the {len(classes)} classes "
                                f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
            i = column[name]
            if not is_difficult:
                target[i] = 1.0
            elif target[i] == 0:
                target[i] = hard_value
        samples.append((str(voc_root / "JPEGImages" / f"{image_id}.jpg"), target))
    return samples


class VOCDataset(ImageFileDataset):
    """``(transform(image), target)`` over one split of a VOC year folder (see the module docstring).

    ``image_ids`` lists the VOC ids in split-file order; ``on_bad_image`` as in ImageFileDataset.
    """

    def __init__(
        self,
        voc_root: str | Path,
        split: str,
        classes: list[str],
        transform: Callable | None = None,
        difficult: str = "ignore",
        on_bad_image: str = "error",
    ) -> None:
        voc_root = Path(voc_root)
        check_voc_images(voc_root)
        samples = voc_samples(voc_root, split, classes, difficult)
        super().__init__(samples, classes, transform, on_bad_image)
        self.image_ids = [Path(path).stem for path, _ in samples]
        self.difficult = difficult
