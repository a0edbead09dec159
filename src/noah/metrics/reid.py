"""Person re-identification retrieval metrics: CMC rank-k and mAP, Market-1501 protocol.

Every query image is matched against the gallery by the distance of their embeddings. Left out of
a query's ranking, as in the Market-1501 evaluation code:

* gallery images of the query's person taken by the query's camera (finding the same person in
  the same camera is not re-identification);
* gallery images with person id -1 ("junk": bad detections that count neither way).

Distractors (person id 0) stay in, as negatives. A query whose person has no image left in the
gallery is not counted (``queries`` says how many were). Then, per counted query:

* CMC rank-k: 1 if a correct match is among the k nearest remaining gallery images;
* average precision over the remaining gallery: the mean, over the correct matches, of the
  precision among the images ranked down to each (what torchmetrics' ``RetrievalMAP`` computes;
  the tests check the two agree). It is computed here for a block of queries at once: one
  torchmetrics call per query took minutes on Market-1501's 3,368 x 15,913 pairs on a CPU.

Negatives scoring exactly like a correct match rank before it (ties count against the model).
``rank1``/``rank5``/``rank10`` and ``mAP`` are means over the counted queries, in percent.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from noah.errors import ConfigError, DataError, ShapeError
from noah.targets import JUNK_ID

__all__ = ["DISTANCES", "JUNK_ID", "ReIDMetrics", "reid_metrics"]

DISTANCES = ("cosine", "euclidean")


def _similarity(query: torch.Tensor, gallery: torch.Tensor, distance: str) -> torch.Tensor:
    """``(Q, G)`` scores, larger = nearer: cosine similarity or negative Euclidean distance."""
    if distance == "cosine":
        return F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).T
    return -torch.cdist(query, gallery)


def reid_metrics(
    query_features: torch.Tensor,
    query_ids: torch.Tensor,
    query_cameras: torch.Tensor,
    gallery_features: torch.Tensor,
    gallery_ids: torch.Tensor,
    gallery_cameras: torch.Tensor,
    distance: str = "cosine",
    ranks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 256,
) -> dict[str, float]:
    """CMC and mAP of every query against the gallery (see the module docstring).

    Args:
        query_features: ``(Q, D)`` embeddings; ``query_ids``, ``query_cameras``: ``(Q,)`` integers.
        gallery_features: ``(G, D)``; ``gallery_ids``, ``gallery_cameras``: ``(G,)``.
        distance: ``"cosine"`` or ``"euclidean"``.
        ranks: the CMC ranks to report (``rank<k>`` keys).
        chunk_size: queries per block of the ``(Q, G)`` distance matrix (bounds memory).

    Returns ``{"rank1": ..., "rank5": ..., "rank10": ..., "mAP": ..., "queries": counted,
    "gallery": G}``; percentages except the counts.
    """
    if distance not in DISTANCES:
        raise ConfigError(f"unknown re-ID distance {distance!r}; expected one of {', '.join(DISTANCES)}")
    if query_features.ndim != 2 or gallery_features.ndim != 2 or query_features.shape[1] != gallery_features.shape[1]:
        raise ShapeError(f"re-ID features must be (Q, D) and (G, D), got {tuple(query_features.shape)} "
                         f"and {tuple(gallery_features.shape)}")
    for name, ids, cams, feats in (("query", query_ids, query_cameras, query_features),
                                   ("gallery", gallery_ids, gallery_cameras, gallery_features)):
        if ids.shape != (len(feats),) or cams.shape != (len(feats),):
            raise ShapeError(f"{name} ids and cameras must be ({len(feats)},), got {tuple(ids.shape)} and {tuple(cams.shape)}")
    if len(gallery_features) == 0:
        raise DataError("the re-ID gallery is empty")
    query_features, gallery_features = query_features.float(), gallery_features.float()
    hits = torch.zeros(len(ranks), dtype=torch.float64)
    ap_sum, counted = 0.0, 0
    not_junk = gallery_ids != JUNK_ID
    for start in range(0, len(query_features), chunk_size):
        q_ids = query_ids[start:start + chunk_size, None]
        q_cams = query_cameras[start:start + chunk_size, None]
        scores = _similarity(query_features[start:start + chunk_size], gallery_features, distance)
        same_id = gallery_ids[None] == q_ids
        valid = not_junk[None] & ~(same_id & (gallery_cameras[None] == q_cams)) & (q_ids != JUNK_ID)
        match = same_id & valid
        # best first; among equal scores the negatives first (two stable sorts)
        negatives_first = torch.argsort(match.to(torch.uint8), dim=1, stable=True)
        order = negatives_first.gather(1, torch.argsort(scores.gather(1, negatives_first), dim=1, descending=True, stable=True))
        match, valid = match.gather(1, order), valid.gather(1, order)
        position = valid.cumsum(1)  # 1-based rank among the gallery images this query keeps
        found = match.cumsum(1)
        num_matches = match.sum(1)
        counted_rows = num_matches > 0
        precision_at_matches = torch.where(match, found / position.clamp(min=1), 0.0).sum(1, dtype=torch.float64)
        ap_sum += float((precision_at_matches / num_matches.clamp(min=1))[counted_rows].sum())
        first_match = torch.where(match, position, position.new_full((), len(gallery_ids) + 1)).amin(1)[counted_rows]
        hits += torch.stack([(first_match <= k).sum() for k in ranks]).double().cpu()
        counted += int(counted_rows.sum())
    if counted == 0:
        raise DataError(f"no query of the {len(query_features)} has a correct match in the gallery of "
                        f"{len(gallery_features)} images (same person, other camera)")
    out = {f"rank{k}": 100.0 * float(h) / counted for k, h in zip(ranks, hits)}
    out["mAP"] = 100.0 * ap_sum / counted
    out["queries"], out["gallery"] = counted, len(gallery_features)
    return out


class ReIDMetrics(Metric):
    """Collect query and gallery embeddings over batches (and DDP ranks); ``compute()`` ranks them.

    ``update(features (B, D), target (B, 2), query: bool)``: ``target`` holds ``[person id,
    camera id]`` per image (what the query/gallery datasets of :mod:`noah.data.market1501` yield).
    ``compute()`` returns :func:`reid_metrics` of everything seen.
    """

    full_state_update = False

    def __init__(self, distance: str = "cosine", ranks: Sequence[int] = (1, 5, 10), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if distance not in DISTANCES:
            raise ConfigError(f"unknown re-ID distance {distance!r}; expected one of {', '.join(DISTANCES)}")
        self.distance, self.ranks = distance, tuple(ranks)
        for role in ("query", "gallery"):
            for part in ("features", "ids", "cameras"):
                self.add_state(f"{role}_{part}", default=[], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, target: torch.Tensor, query: bool) -> None:  # type: ignore[override]
        if features.ndim != 2 or target.shape != (len(features), 2):
            raise ShapeError(f"re-ID update needs features (B, D) and target (B, 2), got {tuple(features.shape)} "
                             f"and {tuple(target.shape)}")
        role = "query" if query else "gallery"
        getattr(self, f"{role}_features").append(features.detach().float())
        getattr(self, f"{role}_ids").append(target[:, 0].long())
        getattr(self, f"{role}_cameras").append(target[:, 1].long())

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        parts = {}
        for role in ("query", "gallery"):
            for part in ("features", "ids", "cameras"):
                state = getattr(self, f"{role}_{part}")
                if isinstance(state, list) and not state:
                    raise DataError(f"no {role} images were seen by the re-ID evaluation")
                parts[f"{role}_{part}"] = dim_zero_cat(state)
        return reid_metrics(**parts, distance=self.distance, ranks=self.ranks)
