"""Pascal VOC's interpolated average precision, in its two published versions.

Given a class's precision/recall points (one per distinct score threshold), both versions first
replace the precision at recall ``r`` by the best precision at any recall ``>= r`` (the
"interpolated" precision, which makes the curve monotone):

* ``"11point"`` (VOC2007 devkit): the mean of the interpolated precision at recall 0, 0.1, ..., 1;
* ``"area"`` (VOC2010 and later devkits): the area under the interpolated curve, summed over the
  recall values where recall changes.

torchmetrics' ``AveragePrecision`` is neither: it sums ``(R_n - R_{n-1}) * P_n`` over the raw,
non-interpolated curve (the number multi-label papers report as mAP). Tied scores form one point
here, where the VOC devkit would walk through them in arbitrary order.
"""

from __future__ import annotations

import torch

from noah.errors import ConfigError

__all__ = ["VOC_AP_METHODS", "voc_average_precision"]

VOC_AP_METHODS = ("11point", "area")


def voc_average_precision(precision: torch.Tensor, recall: torch.Tensor, method: str = "area") -> float:
    """VOC average precision in ``[0, 1]`` from one class's curve.

    Args:
        precision, recall: ``(P,)`` each, one point per distinct score threshold, in any order.
            (torchmetrics' precision-recall curve appends an extra point (precision 1, recall 0)
            that no threshold reaches: leave it out.)
        method: ``"11point"`` (VOC2007) or ``"area"`` (VOC2010+).
    """
    if method not in VOC_AP_METHODS:
        raise ConfigError(f"unknown VOC AP method {method!r}; expected one of {', '.join(VOC_AP_METHODS)}")
    order = torch.argsort(recall, stable=True)
    rec, prec = recall[order].double().cpu(), precision[order].double().cpu()
    if method == "11point":
        # i / 10 rather than a running sum of 0.1, so that a recall of exactly 0.3 reaches 0.3
        points = [prec[rec >= i / 10].max() if bool((rec >= i / 10).any()) else prec.new_zeros(()) for i in range(11)]
        return float(torch.stack(points).mean())
    mrec = torch.cat([rec.new_zeros(1), rec, rec.new_ones(1)])
    mpre = torch.cat([prec.new_zeros(1), prec, prec.new_zeros(1)])
    envelope = mpre.flip(0).cummax(0).values.flip(0)
    steps = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[steps + 1] - mrec[steps]) * envelope[steps + 1]).sum())
