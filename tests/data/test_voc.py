"""Pascal VOC: detection, split selection, difficult objects, errors, metrics, on files in the devkit layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from noah import ConfigError, DataError
from noah.data import create_dataset, detect_formats, resolve_dataset
from noah.metrics import IGNORE_TARGET, ClassificationMetrics

OBJECT = ("<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{difficult}</difficult>"
          "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>{parts}</object>")
PART = "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>"
# image id -> (class, difficult) per object; a person with a <part> (person layout), whose name is no object
IMAGES = {
    "000005": [("chair", 0), ("chair", 1)],
    "000007": [("car", 0)],
    "000009": [("horse", 0), ("person", 1)],
    "000012": [("car", 1)],
    "000016": [("bicycle", 0)],
    "000017": [("person", 0), ("horse", 0)],
}
SPLITS = {"train": ["000012", "000017"], "val": ["000005", "000009"], "test": ["000007", "000016"]}
SPLITS["trainval"] = sorted(SPLITS["train"] + SPLITS["val"])
CLASSES = ["bicycle", "car", "chair", "horse", "person"]


def write_voc(root: Path, year: str = "VOC2007", images=IMAGES, splits=SPLITS, class_files: bool = True) -> Path:
    """A VOC devkit folder ``root/VOCdevkit/<year>`` as the tars unpack; returns the year folder."""
    voc = root / "VOCdevkit" / year
    for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        body = "".join(OBJECT.format(name=n, difficult=d, parts=PART if n == "person" else "") for n, d in objects)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation>\n\t<folder>{year}</folder>\n\t<filename>{image_id}.jpg</filename>\n"
            f"\t<size><width>20</width><height>16</height><depth>3</depth></size>\n\t{body}\n</annotation>\n")
        Image.new("RGB", (20, 16), (int(image_id) * 9 % 256, 90, 30)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for name in CLASSES if class_files else ():
            lines = []
            for i in ids:
                flags = [d for n, d in images.get(i, []) if n == name]
                lines.append(f"{i} {(1 if 0 in flags else 0) if flags else -1:2d}\n")
            (voc / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("".join(lines))
    return voc


def test_voc_devkit_is_detected_with_trainval_test_splits(tmp_path):
    write_voc(tmp_path / "voc")
    assert detect_formats(tmp_path / "voc") == ["voc"]
    info = resolve_dataset(tmp_path / "voc")
    assert (info.task, info.format, info.class_names) == ("multilabel", "voc", CLASSES)
    assert info.split_names == {"train": "trainval", "val": "test"}
    assert sorted(info.splits) == ["test", "train", "trainval", "val"]
    train = create_dataset(info, "train", transform=lambda img: torch.tensor(img.size))
    assert train.image_ids == SPLITS["trainval"]
    # 000005: chair (one plain object); 000009: horse, person difficult-only; 000012: car difficult-only
    targets = {i: t.tolist() for i, (_, t) in zip(train.image_ids, train.samples)}
    assert targets["000005"] == [0, 0, 1, 0, 0]
    assert targets["000009"] == [0, 0, 0, 1, IGNORE_TARGET]
    assert targets["000012"] == [0, IGNORE_TARGET, 0, 0, 0]
    assert targets["000017"] == [0, 0, 0, 1, 1]  # the person's <part> named "head" is no object
    image, target = train[0]
    assert image.tolist() == [20, 16] and target.dtype == torch.float32
    assert len(create_dataset(info, "val")) == 2 and len(create_dataset(info, "test")) == 2


def test_difficult_pairs_can_count_as_positive(tmp_path):
    info = resolve_dataset(write_voc(tmp_path / "voc"))  # the year folder itself works as --data too
    train = create_dataset(info, "train", difficult="positive")
    targets = {i: t.tolist() for i, (_, t) in zip(train.image_ids, train.samples)}
    assert targets["000009"] == [0, 0, 0, 1, 1] and targets["000012"] == [0, 1, 0, 0, 0]
    with pytest.raises(ConfigError, match="difficult must be one of ignore, positive, got 'negative'"):
        create_dataset(info, "train", difficult="negative")


def test_difficult_pairs_are_left_out_of_the_metrics(tmp_path):
    info = resolve_dataset(write_voc(tmp_path / "voc"))
    ignored = torch.stack([t for _, t in create_dataset(info, "train").samples])
    positive = torch.stack([t for _, t in create_dataset(info, "train", difficult="positive").samples])
    # a model that finds every plain object and scores the difficult-only pairs like negatives
    logits = torch.where(ignored == 1, 4.0, -4.0)
    scores = {}
    for mode, target in (("ignore", ignored), ("positive", positive)):
        metrics = ClassificationMetrics("multilabel", info.num_classes, voc_ap=True)
        metrics.update(logits, target)
        scores[mode] = metrics.compute()
    assert scores["ignore"]["mAP"] == scores["ignore"]["mAP_11pt"] == scores["ignore"]["mAP_area"] == 100.0
    assert scores["ignore"]["OR"] == 100.0
    assert scores["positive"]["mAP"] < 100.0 and scores["positive"]["OR"] < 100.0


def test_split_selection_and_voc2012_without_test_annotations(tmp_path):
    write_voc(tmp_path / "a")
    info = resolve_dataset(tmp_path / "a", train_split="train", val_split="val")
    assert info.split_names == {"train": "train", "val": "val"}
    assert create_dataset(info, "train").image_ids == SPLITS["train"]
    assert "trainval" in info.splits and "test" in info.splits
    # VOC2012's test.txt comes without annotations: the defaults fall back to train / val
    splits = dict(SPLITS, test=["2008_000001"])
    info = resolve_dataset(write_voc(tmp_path / "b", "VOC2012", splits=splits).parent.parent)
    assert info.split_names == {"train": "train", "val": "val"}
    with pytest.raises(DataError, match=r"has no VOC split 'minival' \(expected ImageSets/Main/minival.txt; splits found: "):
        resolve_dataset(tmp_path / "a", val_split="minival")


def test_classes_come_from_the_annotations_without_class_files(tmp_path):
    info = resolve_dataset(write_voc(tmp_path / "voc", class_files=False))
    assert info.class_names == ["car", "chair", "horse", "person"]  # trainval's; bicycle is only in test
    info = resolve_dataset(tmp_path / "voc", train_split="train")
    assert info.class_names == ["car", "horse", "person"]
    with pytest.raises(DataError, match=r"000016.xml: object class 'bicycle' is not one of the 3 classes \(car, horse, person\)"):
        create_dataset(info, "val")


def test_explicit_format_and_task(tmp_path):
    write_voc(tmp_path / "voc")
    assert resolve_dataset(tmp_path / "voc", format="voc", task="multilabel").format == "voc"
    with pytest.raises(ConfigError, match="the voc format is multilabel, not multiclass"):
        resolve_dataset(tmp_path / "voc", format="voc", task="multiclass")
    with pytest.raises(ConfigError, match="unknown data format 'pascal'"):
        resolve_dataset(tmp_path / "voc", format="pascal")
    with pytest.raises(DataError, match="is not a Pascal VOC folder"):
        resolve_dataset(tmp_path, format="voc")


def _drop(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    "mutate,at,pattern",
    [
        (lambda v: _drop(v / "Annotations" / "000016.xml"), "val",
         r"missing annotation file .*000016.xml \(expected one Annotations/<id>.xml per listed image\)"),
        (lambda v: (v / "Annotations" / "000007.xml").write_text("<annotation><object>"), "val",
         r"cannot parse .*000007.xml as VOC XML"),
        (lambda v: (v / "Annotations" / "000007.xml").write_text("<annotation><object><name>dragon</name></object></annotation>"),
         "val", r"000007.xml: object class 'dragon' is not one of the 5 classes"),
        (lambda v: (v / "Annotations" / "000007.xml").write_text(
            "<annotation><object><difficult>1</difficult></object></annotation>"),
         "val", r"000007.xml: an <object> has no <name>"),
        (lambda v: (v / "Annotations" / "000007.xml").write_text(
            "<annotation><object><name>car</name><difficult>yes</difficult></object></annotation>"),
         "val", r"<difficult> of a 'car' object is 'yes', expected 0 or 1"),
        (lambda v: (v / "ImageSets" / "Main" / "trainval.txt").write_text("\n"), "resolve",
         r"trainval.txt lists no images \(expected one image id per line\)"),
        (lambda v: __import__("shutil").rmtree(v / "JPEGImages"), "resolve",
         r"missing folder .*JPEGImages \(a VOC folder holds Annotations/<id>.xml"),
        (lambda v: write_voc(v.parent.parent, "VOC2012"), "resolve",
         r"holds 2 Pascal VOC folders \(VOCdevkit/VOC2007, VOCdevkit/VOC2012\)"),
        (lambda v: [_drop(p) for p in (v / "ImageSets" / "Main").glob("*.txt")], "resolve",
         r"ImageSets/Main has no split files"),
    ],
)
def test_malformed_voc_gives_one_line_errors(tmp_path, mutate, at, pattern):
    voc = write_voc(tmp_path / "voc")
    mutate(voc)
    with pytest.raises(DataError, match=pattern) as error:
        info = resolve_dataset(tmp_path / "voc")
        assert at != "resolve", "resolve_dataset should have failed"
        create_dataset(info, at)
    assert "\n" not in str(error.value)


def test_a_missing_jpeg_is_named_when_read(tmp_path):
    voc = write_voc(tmp_path / "voc")
    (voc / "JPEGImages" / "000007.jpg").unlink()
    dataset = create_dataset(resolve_dataset(tmp_path / "voc"), "val")
    with pytest.raises(DataError, match=r"cannot read image .*000007.jpg"):
        dataset[0]
