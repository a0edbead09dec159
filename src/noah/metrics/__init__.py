"""Validation metrics of SPEC §6 (classification, long-tail, VOC, re-identification), with torchmetrics."""

from noah.metrics.classification import IGNORE_TARGET, TASKS, ClassificationMetrics, primary_metric
from noah.metrics.longtail import SHOT_GROUPS, LongTailMetrics, shot_groups
from noah.metrics.reid import DISTANCES, JUNK_ID, ReIDMetrics, reid_metrics
from noah.metrics.voc import VOC_AP_METHODS, voc_average_precision

__all__ = [
    "ClassificationMetrics", "DISTANCES", "IGNORE_TARGET", "JUNK_ID", "LongTailMetrics", "ReIDMetrics",
    "SHOT_GROUPS", "TASKS", "VOC_AP_METHODS", "primary_metric", "reid_metrics", "shot_groups",
    "voc_average_precision",
]
