"""Target values with a meaning of their own, shared by the datasets and the metrics.

A module of plain constants, so that :mod:`noah.data` need not import :mod:`noah.metrics` (and
torchmetrics, slow to import in every spawned DataLoader worker) to agree with it.
"""

from __future__ import annotations

__all__ = ["DISTRACTOR_ID", "IGNORE_TARGET", "JUNK_ID"]

#: multi-label target of an image-label pair that neither loss nor metric should count
#: (Pascal VOC: a class whose objects in the image are all "difficult")
IGNORE_TARGET = -1
#: re-ID person id of a junk image (a bad detection): left out of training and of every ranking
JUNK_ID = -1
#: re-ID person id of a distractor (no identity of the dataset): a negative for every query
DISTRACTOR_ID = 0
