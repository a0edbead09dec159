"""Market-1501: detection, identity labels, query/gallery targets, junk and distractors, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from noah import ConfigError, DataError
from noah.data import create_dataset, detect_formats, resolve_dataset
from noah.metrics import ReIDMetrics

FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0007_c2s3_070952_01.jpg", "0007_c6s1_003901_02.jpg",
                           "0010_c3s1_001526_01.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c4s6_015641_00.jpg"],
    "bounding_box_test": ["-1_c1s1_000401_03.jpg", "0000_c2s1_000151_01.jpg", "0001_c1s1_001101_02.jpg",
                          "0001_c5s1_012345_01.jpg", "0003_c1s6_015966_03.jpg", "0003_c4s6_016001_01.jpg"],
}


def write_market(root: Path, files=FILES) -> Path:
    """``root/Market-1501-v15.09.15/...`` as the zip unpacks, with a Thumbs.db beside the images."""
    market = root / "Market-1501-v15.09.15"
    for folder, names in files.items():
        (market / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (64, 128), (sum(map(ord, name)) % 256, 80, 80)).save(market / folder / name)
    (market / "bounding_box_test" / "Thumbs.db").write_bytes(b"\x00")
    (market / "gt_bbox").mkdir()
    return market


def test_market_is_detected_one_folder_down(tmp_path):
    write_market(tmp_path / "reid")
    assert detect_formats(tmp_path / "reid") == ["market1501"]
    info = resolve_dataset(tmp_path / "reid")
    assert (info.task, info.format, info.num_classes) == ("reid", "market1501", 3)
    assert info.class_names == ["0002", "0007", "0010"] and sorted(info.splits) == ["gallery", "query", "train"]
    assert resolve_dataset(tmp_path / "reid", task="reid").format == "market1501"


def test_training_labels_are_contiguous_and_cameras_kept(tmp_path):
    info = resolve_dataset(write_market(tmp_path / "reid"))
    train = create_dataset(info, "train", transform=lambda img: torch.tensor(img.size))
    assert train.labels == [0, 1, 1, 2] and train.person_ids == [2, 7, 10]
    assert train.camera_ids == [1, 2, 6, 3] and train.classes == info.class_names
    image, label = train[2]
    assert image.tolist() == [64, 128] and label == 1


def test_query_and_gallery_targets_leave_junk_out_and_keep_distractors(tmp_path):
    info = resolve_dataset(write_market(tmp_path / "reid"))
    query, gallery = create_dataset(info, "query"), create_dataset(info, "gallery")
    assert [t.tolist() for _, t in query.samples] == [[1, 1], [3, 4]]
    assert gallery.person_ids == [0, 1, 1, 3, 3] and gallery.camera_ids == [2, 1, 5, 1, 4]  # no -1, no Thumbs.db
    _, target = gallery[0]
    assert target.dtype == torch.int64 and target.tolist() == [0, 2]


def test_retrieval_over_the_dataset_with_the_metric_object(tmp_path):
    info = resolve_dataset(write_market(tmp_path / "reid"))
    metrics = ReIDMetrics(distance="euclidean")
    for split in ("query", "gallery"):
        loader = torch.utils.data.DataLoader(create_dataset(info, split, transform=lambda img: 0), batch_size=2)
        for _, target in loader:
            features = torch.nn.functional.one_hot(target[:, 0], 8).float()  # an embedding that knows the person
            metrics.update(features, target, query=split == "query")
    out = metrics.compute()
    # query 1 (camera 1): its camera-1 image is left out, the camera-5 one is found first; query 3 likewise
    assert out["rank1"] == 100.0 and out["mAP"] == 100.0 and out["queries"] == 2 and out["gallery"] == 5


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda m: (m / "query" / "0001_c1_f0046182.jpg").write_bytes(b""),
         r"bad re-ID file name .*query/0001_c1_f0046182.jpg \(expected Market-1501 names PPPP_cCsS_FFFFFF_NN.jpg"),
        (lambda m: [p.unlink() for p in (m / "query").iterdir()], r"query holds no images \(expected Market-1501 names"),
        (lambda m: shutil.rmtree(m / "bounding_box_test"), r"missing folder .*bounding_box_test \(a Market-1501 folder holds"),
        (lambda m: [p.rename(p.with_name("-1" + p.name[4:])) for p in (m / "bounding_box_train").iterdir()],
         r"bounding_box_train holds only junk \(-1\) and distractor \(0000\) images"),
        (lambda m: shutil.copytree(m, m.parent / "copy"), r"holds 2 re-ID dataset folders \(Market-1501-v15.09.15, copy\)"),
    ],
)
def test_malformed_market_gives_one_line_errors(tmp_path, mutate, pattern):
    market = write_market(tmp_path / "reid")
    mutate(market)
    with pytest.raises(DataError, match=pattern) as error:
        info = resolve_dataset(tmp_path / "reid", format="market1501")
        create_dataset(info, "query")
        create_dataset(info, "gallery")
    assert "\n" not in str(error.value)


def test_market_split_options_do_not_apply(tmp_path):
    write_market(tmp_path / "reid")
    with pytest.raises(ConfigError, match="Market-1501 has fixed splits"):
        resolve_dataset(tmp_path / "reid", val_split="test")
    with pytest.raises(DataError, match=r"has no 'val' split \(has: train, query, gallery\)"):
        create_dataset(resolve_dataset(tmp_path / "reid"), "val")
