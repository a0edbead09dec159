"""Boxes of COCO-format data as masks in the model's input frame, and the attention-in-box score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noah.data import resolve_dataset
from noah.engine.config import TrainConfig
from noah.engine.model import build_model
from noah.errors import DataError
from noah.viz.boxes import box_mask, mask_in_input_frame, read_scenes
from noah.viz.loaded import LoadedModel
from noah.viz.score import mass_inside, score_maps


def loaded_model(**overrides) -> LoadedModel:
    settings = dict(model="test_resnet", head="noah", image_size=64, crop_pct=1.0, train_crop="squash")
    config = TrainConfig(**{**settings, **overrides})
    return LoadedModel.from_model(build_model(config, 3), config, "multilabel", ["a", "b", "c"])


def test_box_mask_covers_exactly_the_box_pixels() -> None:
    mask = np.asarray(box_mask((10, 8), [[2, 1, 3, 4], [8, 6, 2, 2]])) > 0
    expected = np.zeros((8, 10), dtype=bool)
    expected[1:5, 2:5] = True
    expected[6:8, 8:10] = True
    assert np.array_equal(mask, expected)


def test_masks_follow_the_evaluation_transform() -> None:
    box = [[40, 40, 16, 16]]
    squash = loaded_model()
    mask = mask_in_input_frame(box_mask((64, 64), box), squash.transform, squash.mean, squash.std)
    assert mask.shape == (64, 64) and torch.equal(mask, torch.from_numpy(np.asarray(box_mask((64, 64), box)) > 0))

    # resize the short side to 64 / 0.5 = 128, keep the centre 64: image pixel 40 lands on 8
    crop = loaded_model(crop_pct=0.5, train_crop="rrc")
    mask = mask_in_input_frame(box_mask((128, 128), box), crop.transform, crop.mean, crop.std)
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[8:24, 8:24] = True
    assert torch.equal(mask, expected)
    cut = mask_in_input_frame(box_mask((128, 128), [[0, 0, 20, 20]]), crop.transform, crop.mean, crop.std)
    assert not cut.any()


def test_read_scenes_groups_boxes_by_class_and_refuses_data_without_boxes(tmp_path: Path, image_folder_info,
                                                                        make_coco) -> None:
    root = make_coco(tmp_path / "coco", [{0: [[1, 2, 3, 4]], 2: [[5, 5, 5, 5], [20, 20, 4, 4]]}, {}])
    scenes = read_scenes(resolve_dataset(root))
    assert len(scenes) == 1  # the image without boxes has nothing to score
    assert scenes[0].path.endswith("val_0.png") and scenes[0].boxes == {0: [[1, 2, 3, 4]], 2: [[5, 5, 5, 5], [20, 20, 4, 4]]}
    with pytest.raises(DataError, match="not COCO-format data with boxes"):
        read_scenes(image_folder_info)
    empty = make_coco(tmp_path / "empty", [{}])
    with pytest.raises(DataError, match="has no boxes"):
        read_scenes(resolve_dataset(empty))


@pytest.fixture
def image_folder_info(tmp_path: Path):
    for split in ("train", "val"):
        (tmp_path / "folder" / split / "x").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "folder" / split / "x" / "0.png")
    return resolve_dataset(tmp_path / "folder")


def test_mass_inside() -> None:
    mass = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert mass_inside(mass, torch.tensor([[False, True], [False, False]])) == pytest.approx(0.75)
    assert mass_inside(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool)) is None


def test_score_is_one_for_uniform_maps_and_one_over_the_share_for_maps_on_the_boxes(tmp_path: Path, make_coco) -> None:
    root = make_coco(tmp_path / "coco", [{0: [[0, 0, 32, 32]]}, {1: [[16, 16, 16, 32]], 2: [[0, 48, 64, 16]]}])
    scenes = read_scenes(resolve_dataset(root))
    loaded = loaded_model()

    def uniform(images, classes):
        return [torch.ones(len(cs), 64, 64) for cs in classes]

    upcoming = iter(scenes)

    def on_boxes(images, classes):  # every map is its class's box in the scene (scenes come in order)
        out = []
        for cs in classes:
            scene = next(upcoming)
            out.append(torch.stack([torch.from_numpy(np.asarray(box_mask((64, 64), scene.boxes[c])) > 0).float()
                                    for c in cs]))
        return out

    def nothing(images, classes):
        return [torch.zeros(len(cs), 64, 64) for cs in classes]

    flat = score_maps(loaded, scenes, uniform, "uniform")
    assert flat.pairs == 3 and flat.ratio == pytest.approx(1.0) and flat.inside == pytest.approx(flat.share)
    assert flat.share == pytest.approx((1 / 4 + 1 / 8 + 1 / 4) / 3)
    exact = score_maps(loaded, scenes, on_boxes, "boxes", batch_size=1)
    assert exact.inside == pytest.approx(1.0) and exact.ratio == pytest.approx((4 + 8 + 4) / 3)
    empty = score_maps(loaded, scenes, nothing, "nothing")
    assert empty.empty == 3 and empty.ratio == pytest.approx(1.0)
    assert "ratio 1.00" in empty.describe() and "3 maps without mass" in empty.describe()
