"""Re-ID retrieval (CMC, mAP, Market-1501 exclusions) against a gallery ranked by hand."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.retrieval import RetrievalMAP

from noah.errors import ConfigError, DataError, ShapeError
from noah.metrics import ReIDMetrics, reid_metrics

# 1-d features, Euclidean distance = |difference|. (feature, person id, camera)
QUERIES = [(0.0, 1, 1), (10.0, 2, 2), (5.0, 3, 1)]
GALLERY = [
    (0.1, 1, 1),   # g0: person 1 in the query's own camera 1 -> left out for query A
    (0.2, -1, 2),  # g1: junk -> left out
    (0.3, 0, 3),   # g2: distractor -> a negative
    (0.5, 1, 2),   # g3: match for A
    (0.7, 2, 3),   # g4: a far match for B
    (1.0, 1, 3),   # g5: match for A
    (8.7, 3, 1),   # g6: person 3's only image, in query C's camera -> C has no match and is not counted
    (10.5, 2, 2),  # g7: person 2 in query B's camera 2 -> left out for B
    (11.0, 5, 1),  # g8
    (12.0, 2, 1),  # g9: match for B
    (7.5, 2, 3),   # g10: match for B
]


def as_tensors(rows):
    feats, ids, cams = zip(*rows)
    return torch.tensor(feats)[:, None], torch.tensor(ids), torch.tensor(cams)


def test_cmc_and_map_by_hand() -> None:
    out = reid_metrics(*as_tensors(QUERIES), *as_tensors(GALLERY), distance="euclidean", ranks=(1, 2, 3))
    # A: g2- g3+ g4- g5+ ...          -> first match at rank 2, AP (1/2 + 2/4) / 2 = 1/2
    # B: g8- (1.0) g6- (1.3) g9+ (2.0) g10+ (2.5) g5- (9.0) g4+ (9.3) ...
    #                                             -> rank 3, AP (1/3 + 2/4 + 3/6) / 3 = 4/9
    assert out["queries"] == 2 and out["gallery"] == 11
    assert out["rank1"] == 0.0 and out["rank2"] == pytest.approx(50.0) and out["rank3"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(100 * (1 / 2 + 4 / 9) / 2)


def test_ties_with_a_negative_count_against_the_model() -> None:
    q = (torch.tensor([[0.0]]), torch.tensor([1]), torch.tensor([1]))
    g = (torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 2]), torch.tensor([2, 2]))
    assert reid_metrics(*q, *g, distance="euclidean", ranks=(1, 2))["rank1"] == 0.0


def test_cosine_ranks_like_euclidean_on_unit_vectors_and_map_matches_torchmetrics() -> None:
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(20, 8, generator=g), torch.randn(60, 8, generator=g)
    qi, gi = torch.randint(0, 6, (20,), generator=g), torch.randint(-1, 6, (60,), generator=g)
    qc, gc = torch.randint(1, 4, (20,), generator=g), torch.randint(1, 4, (60,), generator=g)
    cosine = reid_metrics(qf, qi, qc, gf, gi, gc, distance="cosine", chunk_size=7)
    unit = reid_metrics(qf / qf.norm(dim=1, keepdim=True), qi, qc, gf / gf.norm(dim=1, keepdim=True), gi, gc,
                        distance="euclidean")
    assert cosine == pytest.approx(unit)
    # mAP again with torchmetrics' RetrievalMAP over the pairs that the protocol keeps
    scores = torch.nn.functional.normalize(qf, dim=1) @ torch.nn.functional.normalize(gf, dim=1).T
    keep = (gi[None] != -1) & ~((gi[None] == qi[:, None]) & (gc[None] == qc[:, None]))
    rows = torch.arange(20)[:, None].expand(20, 60)
    reference = RetrievalMAP(empty_target_action="skip")
    # + 2: torchmetrics takes a score <= 0 as "not retrieved"
    reference.update(scores[keep] + 2, (gi[None] == qi[:, None])[keep], rows[keep])
    assert cosine["mAP"] == pytest.approx(100 * float(reference.compute()), abs=1e-4)


def test_reid_metric_object_collects_batches() -> None:
    qf, qi, qc = as_tensors(QUERIES)
    gf, gi, gc = as_tensors(GALLERY)
    m = ReIDMetrics(distance="euclidean", ranks=(1, 2, 3))
    m.update(gf[:4], torch.stack([gi[:4], gc[:4]], 1), query=False)
    m.update(qf, torch.stack([qi, qc], 1), query=True)
    m.update(gf[4:], torch.stack([gi[4:], gc[4:]], 1), query=False)
    assert m.compute() == pytest.approx(reid_metrics(qf, qi, qc, gf, gi, gc, "euclidean", ranks=(1, 2, 3)))


def test_reid_errors() -> None:
    qf, qi, qc = as_tensors(QUERIES)
    gf, gi, gc = as_tensors(GALLERY)
    with pytest.raises(DataError, match="no query of the 1 has a correct match"):
        reid_metrics(qf[2:], qi[2:], qc[2:], gf, gi, gc)
    with pytest.raises(ConfigError, match="unknown re-ID distance 'l1'"):
        reid_metrics(qf, qi, qc, gf, gi, gc, distance="l1")
    with pytest.raises(ShapeError, match=r"re-ID features must be \(Q, D\) and \(G, D\)"):
        reid_metrics(qf, qi, qc, torch.zeros(11, 2), gi, gc)
    m = ReIDMetrics()
    m.update(qf, torch.stack([qi, qc], 1), query=True)
    with pytest.raises(DataError, match="no gallery images were seen"):
        m.compute()
    with pytest.raises(ShapeError, match=r"target \(B, 2\)"):
        m.update(qf, qi, query=True)
