"""NOAH's maps at image size, the classes shown, and the model wrapper (no training)."""

from __future__ import annotations

import pytest
import torch

from noah.engine.config import TrainConfig
from noah.engine.model import build_model
from noah.errors import ConfigError
from noah.viz.attention import choose_classes, class_maps, noah_maps, parse_classes, upsample
from noah.viz.loaded import LoadedModel

NAMES = [f"c{i}" for i in range(5)]


def loaded_model(head: str = "noah", task: str = "multiclass") -> LoadedModel:
    config = TrainConfig(model="test_resnet", head=head, image_size=64, output_stride=8, crop_pct=1.0,
                         train_crop="squash", num_heads=4)
    return LoadedModel.from_model(build_model(config, len(NAMES)), config, task, NAMES)


def test_maps_at_image_size_add_up_to_the_logits() -> None:
    loaded = loaded_model()
    images = torch.randn(2, 3, 64, 64)
    out = noah_maps(loaded, images)
    b, n, m, h, w = out.attention.shape
    assert (b, n, m) == (2, 4, 5) and (h, w) == (8, 8) and out.value.shape == out.attention.shape
    # what the product map shows is what the head sums: y_m = sum_n sum_l A * V
    torch.testing.assert_close((out.attention * out.value).sum((1, 3, 4)), out.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.attention.sum((3, 4)), torch.ones(2, 4, 5))

    scores = loaded.scores(out.logits)
    maps = class_maps(out, 1, [3, 0], NAMES, scores, (64, 64))
    assert [m.name for m in maps] == ["c3", "c0"]
    assert maps[0].attention.shape == (4, 64, 64) and maps[0].product.shape == (64, 64)
    assert maps[0].score == pytest.approx(float(scores[1, 3]))
    # upsampling keeps each block's map a distribution up to the change of grid
    assert maps[0].attention_mass.sum() == pytest.approx(4 * 64 * 64 / 64, rel=0.02)
    torch.testing.assert_close(maps[1].product, upsample((out.attention * out.value)[1, :, 0].sum(0), (64, 64)))


def test_a_gap_model_has_no_maps() -> None:
    loaded = loaded_model("gap")
    assert not loaded.has_maps
    with pytest.raises(ConfigError, match="need a NOAH head"):
        noah_maps(loaded, torch.randn(1, 3, 64, 64))


def test_upsample_keeps_constant_maps_and_leading_dims() -> None:
    maps = torch.full((2, 3, 4, 4), 0.5)
    up = upsample(maps, (16, 12))
    assert up.shape == (2, 3, 16, 12) and torch.allclose(up, torch.full_like(up, 0.5))


def test_display_undoes_the_normalisation() -> None:
    loaded = loaded_model()
    picture = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor(loaded.mean).view(1, 3, 1, 1), torch.tensor(loaded.std).view(1, 3, 1, 1)
    shown = loaded.display((picture - mean) / std)
    assert shown.shape == (1, 64, 64, 3)
    torch.testing.assert_close(torch.from_numpy(shown), picture.permute(0, 2, 3, 1), rtol=0, atol=1e-6)


def test_classes_by_name_or_index_and_a_one_line_error_otherwise() -> None:
    assert parse_classes(["c2", "4", "c2"], NAMES) == [2, 4]
    for bad in ("c9", "7", "-1"):
        with pytest.raises(ConfigError, match="neither a class name"):
            parse_classes([bad], NAMES)


def test_classes_shown_are_the_top_k_or_the_labels_above_the_threshold() -> None:
    scores = torch.tensor([0.1, 0.7, 0.05, 0.6, 0.2])
    assert choose_classes(scores, "multiclass", 2, 0.5) == [1, 3]
    assert choose_classes(scores, "multiclass", 99, 0.5) == [1, 3, 4, 0, 2]
    assert choose_classes(scores, "multilabel", 2, 0.5) == [1, 3]
    assert choose_classes(scores, "multilabel", 2, 0.9) == [1]  # none above: the best one
