"""noah.metrics against tiny cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from noah.errors import ConfigError
from noah.metrics import ClassificationMetrics, primary_metric


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_multiclass_top1_top5_by_hand() -> None:
    # 6 classes, 4 samples. Scores rank the classes; the target's rank decides top-1 / top-5.
    logits = torch.tensor(
        [
            [9.0, 1, 2, 3, 4, 5],  # target 0: rank 1 -> top1, top5
            [9.0, 8, 7, 6, 5, 4],  # target 5: rank 6 -> neither
            [1.0, 9, 2, 3, 4, 5],  # target 3: rank 4 -> top5 only
            [1.0, 2, 3, 4, 5, 9],  # target 5: rank 1 -> both
        ]
    )
    target = torch.tensor([0, 5, 3, 5])
    m = ClassificationMetrics("multiclass", 6)
    m.update(logits[:2], target[:2], loss=1.0)
    m.update(logits[2:], target[2:], loss=3.0)
    out = m.compute()
    assert list(out)[:2] == ["top1", "top5"]
    assert out["top1"] == pytest.approx(50.0)
    assert out["top5"] == pytest.approx(75.0)
    assert out["loss"] == pytest.approx(2.0)  # mean over samples of per-batch mean losses
    assert out["samples"] == 4
    m.reset()
    m.update(logits[:1], target[:1])
    assert m.compute()["samples"] == 1 and "loss" not in m.compute()


def test_top_k_capped_by_class_count() -> None:
    m = ClassificationMetrics("multiclass", 3)
    m.update(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0]))
    out = m.compute()
    assert out["top1"] == 0.0 and out["top3"] == 100.0


def test_multilabel_by_hand() -> None:
    # 3 labels, 4 images. Scores given as probabilities (turned into logits for the metric).
    probs = torch.tensor(
        [
            [0.9, 0.8, 0.1],
            [0.7, 0.2, 0.6],
            [0.2, 0.9, 0.4],
            [0.6, 0.3, 0.8],
        ]
    )
    target = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float32)
    m = ClassificationMetrics("multilabel", 3, threshold=0.5)
    m.update(probs.logit(), target)
    out = m.compute()
    # predictions at 0.5: [1,1,0], [1,0,1], [0,1,0], [1,0,1]
    # class 0: tp 2 fp 1 fn 0 -> P 2/3 R 1; class 1: tp 2 fp 0 fn 0 -> P 1 R 1;
    # class 2: tp 1 fp 1 fn 1 -> P 1/2 R 1/2
    cp = (2 / 3 + 1 + 1 / 2) / 3
    cr = (1 + 1 + 1 / 2) / 3
    op, orr = 5 / 7, 5 / 6
    assert out["CP"] == pytest.approx(100 * cp)
    assert out["CR"] == pytest.approx(100 * cr)
    assert out["CF1"] == pytest.approx(100 * 2 * cp * cr / (cp + cr))
    assert out["OP"] == pytest.approx(100 * op)
    assert out["OR"] == pytest.approx(100 * orr)
    assert out["OF1"] == pytest.approx(100 * 2 * op * orr / (op + orr))
    # CF1 is not the mean of per-class F1s
    mean_f1 = (2 * (2 / 3) / (2 / 3 + 1) + 1 + 1 / 2) / 3
    assert out["CF1"] != pytest.approx(100 * mean_f1)
    # AP per class (scores ranked, + = positive): class 0 .9+ .7+ .6 .2 -> 1;
    # class 1 .9+ .8+ .3 .2 -> 1; class 2 .8+ .6 .4+ .1 -> (1/1 + 2/3) / 2
    ap = (1 + 1 + (1 + 2 / 3) / 2) / 3
    assert out["mAP"] == pytest.approx(100 * ap)
    assert out["samples"] == 4


def test_map_ignores_classes_without_positives() -> None:
    probs = torch.tensor([[0.9, 0.8, 0.3], [0.2, 0.1, 0.7], [0.6, 0.7, 0.1]])
    target = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0]], dtype=torch.float32)  # class 2: no positive
    m = ClassificationMetrics("multilabel", 3)
    m.update(probs.logit(), target)
    # class 0: .9+ .6 .2 -> 1; class 1: .8 .7+ .1 -> 1/2; class 2 has no AP
    assert m.compute()["mAP"] == pytest.approx(100 * (1 + 1 / 2) / 2)
    empty = ClassificationMetrics("multilabel", 2)
    empty.update(torch.zeros(2, 2), torch.zeros(2, 2))
    assert empty.compute()["mAP"] == 0.0


def test_multilabel_scores_in_unit_range_are_still_logits() -> None:
    # logits that all lie in [0, 1] must still go through a sigmoid (0.3 -> 0.57 >= 0.5)
    m = ClassificationMetrics("multilabel", 2)
    m.update(torch.tensor([[0.3, 0.2]]), torch.tensor([[1.0, 1.0]]))
    assert m.compute()["OR"] == 100.0


def test_primary_metric_and_bad_task() -> None:
    assert primary_metric("multiclass") == "top1" and primary_metric("multilabel") == "mAP"
    with pytest.raises(ConfigError):
        ClassificationMetrics("regression", 3)
