"""A few validation images of a run, correctly and wrongly classified, with the maps behind the
decision: NOAH's attention and product maps, or Grad-CAM++ for a run with another head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from noah.viz.attention import class_maps, noah_maps
from noah.viz.figures import Panel, figure_bytes, grid_figure
from noah.viz.gradcam import GradCAMPlusPlusMaps
from noah.viz.loaded import LoadedModel

__all__ = ["GalleryItem", "pick_examples", "gallery_items"]


@dataclass
class GalleryItem:
    """One gallery image: its figure (PNG bytes), path and whether the prediction was right."""

    path: str
    correct: bool
    png: bytes
    caption: str


def _is_correct(scores: torch.Tensor, target: torch.Tensor | int, task: str, threshold: float) -> bool:
    if task == "multiclass":
        return int(scores.argmax()) == int(target)
    return bool(torch.equal(scores >= threshold, torch.as_tensor(target) > 0.5))


def _true_classes(target: torch.Tensor | int, task: str) -> list[int]:
    return [int(target)] if task == "multiclass" else torch.as_tensor(target).nonzero().flatten().tolist()


def _predicted_classes(scores: torch.Tensor, task: str, threshold: float) -> list[int]:
    if task == "multiclass":
        return [int(scores.argmax())]
    return [c for c in scores.argsort(descending=True).tolist() if scores[c] >= threshold]


def pick_examples(loaded: LoadedModel, samples: Sequence[tuple[str, object]], count: int, pool: int = 64,
                  batch_size: int = 32) -> list[tuple[str, object, torch.Tensor, bool]]:
    """Up to ``count`` correctly and ``count`` wrongly classified samples among the first ``pool``
    ``(path, target)`` samples: ``(path, target, scores, correct)``, the correct ones first."""
    threshold = loaded.config.threshold
    right, wrong = [], []
    chosen = list(samples[:pool])
    for start in range(0, len(chosen), batch_size):
        part = chosen[start : start + batch_size]
        scores = loaded.predict(loaded.load_images([p for p, _ in part]))
        for (path, target), s in zip(part, scores):
            ok = _is_correct(s, target, loaded.task, threshold)
            bucket = right if ok else wrong
            if len(bucket) < count:
                bucket.append((path, target, s, ok))
        if len(right) >= count and len(wrong) >= count:
            break
    return right + wrong


def gallery_items(loaded: LoadedModel, samples: Sequence[tuple[str, object]], count: int = 4, pool: int = 64,
            max_classes: int = 3) -> list[GalleryItem]:
    """Figures for up to ``count`` right and ``count`` wrong predictions among the first ``pool``
    validation ``samples``: per shown class (the true ones and the predicted ones, at most
    ``max_classes``), NOAH's ``Σ_n A_n`` and ``Σ_n A_n ⊙ V_n`` -- or Grad-CAM++ for other heads."""
    examples = pick_examples(loaded, samples, count, pool)
    if not examples:
        return []
    cam = None if loaded.has_maps else GradCAMPlusPlusMaps(loaded)
    items = []
    try:
        for path, target, scores, ok in examples:
            true = _true_classes(target, loaded.task)
            predicted = _predicted_classes(scores, loaded.task, loaded.config.threshold)
            shown = list(dict.fromkeys(true + predicted))[:max_classes]
            batch = loaded.load_images([path])
            picture = loaded.display(batch)[0]
            rows, labels = [], []
            if loaded.has_maps:
                output = noah_maps(loaded, batch)
                maps = class_maps(output, 0, shown, loaded.class_names, scores[None], tuple(batch.shape[-2:]))
                for m in maps:
                    rows.append([Panel("input"), Panel("Σ attention", m.attention_mass),
                                 Panel("Σ attention × value", m.product, "signed")])
            else:
                for g in cam.maps(batch, [shown])[0]:
                    rows.append([Panel("input"), Panel("Grad-CAM++", g, "cam")])
            for c in shown:
                role = "true, predicted" if c in true and c in predicted else ("true, missed" if c in true else "predicted")
                labels.append(f"{loaded.class_names[c]} ({float(scores[c]):.2f})\n{role}")
            verdict = "right" if ok else "wrong"
            fig = grid_figure(picture, rows, labels, f"{Path(path).name}: {verdict}", cell=1.6)
            caption = (f"{Path(path).name}: {verdict}; true {', '.join(loaded.class_names[c] for c in true) or '-'}, "
                       f"predicted {', '.join(loaded.class_names[c] for c in predicted) or '-'}")
            items.append(GalleryItem(path, ok, figure_bytes(fig, dpi=90), caption))
    finally:
        if cam is not None:
            cam.close()
    return items
