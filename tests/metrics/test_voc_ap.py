"""VOC's 11-point and area APs, and difficult (ignored) pairs, against cases worked out by hand."""

from __future__ import annotations

import pytest
import torch

from noah.errors import ConfigError
from noah.metrics import IGNORE_TARGET, ClassificationMetrics, voc_average_precision

# 7 images, 2 classes; -1 = a "difficult"-only pair, counted by no metric.
SCORES = torch.tensor([[0.95, 0.1], [0.9, 0.8], [0.8, 0.7], [0.7, 0.6], [0.6, 0.55], [0.55, 0.4], [0.4, 0.3]])
TARGET = torch.tensor([[-1, 1], [1, 0], [0, 1], [0, -1], [1, 0], [1, 0], [0, 0]], dtype=torch.float32)


def test_voc_ap_by_hand() -> None:
    # ranked: + - - + +  ->  points (P, R): (1, 1/3) (1/2, 1/3) (1/3, 1/3) (1/2, 2/3) (3/5, 1)
    precision = torch.tensor([1, 1 / 2, 1 / 3, 1 / 2, 3 / 5])
    recall = torch.tensor([1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    # interpolated precision: 1 up to recall 1/3, then max(1/2, 3/5) = 3/5 up to recall 1
    assert voc_average_precision(precision, recall, "area") == pytest.approx((1 + 0.6 + 0.6) / 3)
    # recall points 0, .1, .2, .3 -> 1; .4 ... 1.0 (7 points) -> 3/5
    assert voc_average_precision(precision, recall, "11point") == pytest.approx((4 + 7 * 0.6) / 11)
    # the order of the points does not matter
    flip = torch.arange(4, -1, -1)
    assert voc_average_precision(precision[flip], recall[flip], "area") == pytest.approx(2.2 / 3)
    with pytest.raises(ConfigError, match="unknown VOC AP method 'voc'"):
        voc_average_precision(precision, recall, "voc")


def test_11_point_ap_reaches_an_exact_recall_tenth() -> None:
    # recall 0.3 exactly must count at the 0.3 point (a running sum of 0.1 gives 0.30000000000000004)
    precision, recall = torch.tensor([1.0, 0.5]), torch.tensor([3 / 10, 1.0])
    assert voc_average_precision(precision, recall, "11point") == pytest.approx((4 * 1.0 + 7 * 0.5) / 11)


def test_multilabel_metrics_leave_out_ignored_pairs_and_add_voc_maps() -> None:
    m = ClassificationMetrics("multilabel", 2, voc_ap=True)
    m.update(SCORES[:3].logit(), TARGET[:3])
    m.update(SCORES[3:].logit(), TARGET[3:])
    out = m.compute()
    assert list(out)[:3] == ["mAP", "mAP_11pt", "mAP_area"]
    # class 0 without image 0: .9+ .8- .7- .6+ .55+ -> raw AP (1 + 2/4 + 3/5) / 3
    # class 1 without image 3: .8- .7+ .55- .4- .3- .1+ -> raw AP (1/2 + 2/6) / 2
    ap0, ap1 = (1 + 0.5 + 0.6) / 3, (0.5 + 2 / 6) / 2
    assert out["mAP"] == pytest.approx(100 * (ap0 + ap1) / 2)
    # class 1 interpolated: 1/2 up to recall 1/2, 1/3 up to 1 -> area 5/12; 11 points (6 * 1/2 + 5 * 1/3) / 11
    assert out["mAP_area"] == pytest.approx(100 * (2.2 / 3 + 5 / 12) / 2)
    assert out["mAP_11pt"] == pytest.approx(100 * ((4 + 7 * 0.6) / 11 + (3 + 5 / 3) / 11) / 2)
    # at 0.5: class 0 tp 3 fp 2 fn 0 (image 0 not counted); class 1 tp 1 fp 2 fn 1 (image 3 not counted)
    assert out["CP"] == pytest.approx(100 * (3 / 5 + 1 / 3) / 2)
    assert out["CR"] == pytest.approx(100 * (1 + 1 / 2) / 2)
    assert out["OP"] == pytest.approx(100 * 4 / 8)
    assert out["OR"] == pytest.approx(100 * 4 / 5)
    assert IGNORE_TARGET == -1


def test_counting_difficult_pairs_as_positive_changes_the_numbers() -> None:
    positive = TARGET.clamp(min=0) + (TARGET == IGNORE_TARGET).float()
    m = ClassificationMetrics("multilabel", 2, voc_ap=True)
    m.update(SCORES.logit(), positive)
    # class 0: .95+ .9+ .8- .7- .6+ .55+ -> (1 + 1 + 3/5 + 4/6) / 4
    assert m.compute()["mAP"] == pytest.approx(100 * ((1 + 1 + 0.6 + 4 / 6) / 4 + (1 / 2 + 2 / 3 + 3 / 7) / 3) / 2)


def test_voc_ap_needs_multilabel() -> None:
    with pytest.raises(ConfigError, match="voc_ap needs the multilabel task"):
        ClassificationMetrics("multiclass", 3, voc_ap=True)
