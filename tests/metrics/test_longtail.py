"""Long-tail (many/medium/few-shot) and per-supercategory accuracy against a case worked out by hand."""

from __future__ import annotations

import pytest
import torch

from noah.errors import ConfigError
from noah.metrics import LongTailMetrics, shot_groups


def logits_with_rank(target: int, rank: int, num_classes: int) -> torch.Tensor:
    """Scores that put ``target`` at ``rank`` (1 = best)."""
    others = [c for c in range(num_classes) if c != target]
    order = others[: rank - 1] + [target] + others[rank - 1:]
    scores = torch.empty(num_classes)
    scores[order] = torch.arange(num_classes, 0, -1, dtype=torch.float32)
    return scores


def test_shot_groups_thresholds() -> None:
    assert shot_groups([101, 100, 20, 19, 0]) == ["many", "medium", "medium", "few", "few"]
    assert shot_groups([5, 3], many_shot=4, few_shot=4) == ["many", "few"]
    with pytest.raises(ConfigError, match="need 0 < few_shot <= many_shot"):
        shot_groups([1], many_shot=10, few_shot=20)


def test_long_tail_breakdown_by_hand() -> None:
    # classes 0..5 with 150, 50, 10, 100, 5, 200 training images: many {0, 5}, medium {1, 3}, few {2, 4}
    counts = [150, 50, 10, 100, 5, 200]
    supercategory = [0, 0, 1, 1, 1, 0]  # "a" = {0, 1, 5}, "b" = {2, 3, 4}
    samples = [(0, 1), (0, 2), (1, 1), (2, 6), (3, 1), (4, 3), (5, 1), (5, 1), (5, 2)]  # (target, its rank)
    logits = torch.stack([logits_with_rank(t, r, 6) for t, r in samples])
    target = torch.tensor([t for t, _ in samples])
    m = LongTailMetrics(6, counts, supercategory, ["a", "b"])
    m.update(logits[:4], target[:4], loss=2.0)
    m.update(logits[4:], target[4:], loss=1.0)
    out = m.compute()
    assert list(out)[:5] == ["top1", "top5", "top1_many", "top1_medium", "top1_few"]
    assert out["top1"] == pytest.approx(100 * 5 / 9) and out["top5"] == pytest.approx(100 * 8 / 9)
    # per-class top-1: 1/2, 1, 0, 1, 0, 2/3; groups average classes, not images
    assert out["top1_many"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert out["top1_medium"] == pytest.approx(100.0) and out["top1_few"] == pytest.approx(0.0)
    # supercategories count images: a = 6 images (4 top-1, 6 top-5), b = 3 (1 top-1, 2 top-5)
    assert out["top1/a"] == pytest.approx(100 * 4 / 6) and out["top5/a"] == pytest.approx(100.0)
    assert out["top1/b"] == pytest.approx(100 * 1 / 3) and out["top5/b"] == pytest.approx(100 * 2 / 3)
    assert out["samples"] == 9 and out["loss"] == pytest.approx((4 * 2.0 + 5 * 1.0) / 9)


def test_groups_without_validation_images_are_left_out() -> None:
    m = LongTailMetrics(3, [500, 500, 1])  # no supercategories given
    m.update(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([0]))
    out = m.compute()
    assert "top1_many" in out and "top1_few" not in out and "top1_medium" not in out
    assert not any("/" in key for key in out)


def test_long_tail_argument_errors() -> None:
    with pytest.raises(ConfigError, match="class_counts has 2 values for 3 classes"):
        LongTailMetrics(3, [1, 2])
    with pytest.raises(ConfigError, match="class_supercategory points outside the 1 supercategory names"):
        LongTailMetrics(2, [1, 2], [0, 1], ["a"])
