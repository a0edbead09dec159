"""The attention grids of ``noah visualize`` and the report's gallery, drawn with matplotlib.

Figures are built on matplotlib's object API (:class:`matplotlib.figure.Figure` rendered by the
Agg canvas): no pyplot state, no display, safe in threads and on headless machines.

* :func:`maps_figure` -- the paper's Fig. 2a for one image: per class, each POCA block's
  attention, the value map ``Σ_n V_n`` and the product ``Σ_n A_n ⊙ V_n`` over the image (and the
  baseline's Grad-CAM++ beside them);
* :func:`block_figure` -- Fig. 2b: one block's attention for several classes side by side, the
  baseline's Grad-CAM++ for the same classes below;
* :func:`grid_figure` -- the grid of overlays both are made of.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from noah.viz.attention import ClassMaps

__all__ = ["Panel", "grid_figure", "maps_figure", "block_figure", "figure_bytes"]

#: how each kind of map is coloured: non-negative maps on a sequential scale from 0, signed
#: maps on a diverging one centred on 0
_STYLE = {"attention": ("inferno", False), "cam": ("inferno", False), "signed": ("RdBu_r", True)}
_ALPHA = 0.6


@dataclass
class Panel:
    """One cell of a grid: the image with ``overlay`` (``(H, W)``, or ``None`` for the image alone)
    coloured as ``kind`` (``attention``, ``cam`` or ``signed``), under ``title``."""

    title: str
    overlay: np.ndarray | None = None
    kind: str = "attention"


def _as_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def grid_figure(image: np.ndarray, rows: Sequence[Sequence[Panel]], row_labels: Sequence[str] = (),
                title: str = "", cell: float = 1.9) -> Figure:
    """A grid of overlays on ``image`` (``(H, W, 3)`` floats in [0, 1]; shown in grey under a map):
    one row per entry of ``rows``, each a list of :class:`Panel`; ``row_labels`` go left of the rows."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    grey = image @ np.array([0.299, 0.587, 0.114], dtype=image.dtype)  # so that the map's colours stand out
    fig = Figure(figsize=(cell * n_cols + 0.4, cell * n_rows + (0.5 if title else 0.1)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            panel = row[c]
            if panel.overlay is None:
                ax.imshow(image, interpolation="bilinear")
            else:
                ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
                values = _as_array(panel.overlay).astype(np.float32)
                cmap, signed = _STYLE[panel.kind]
                top = float(np.abs(values).max()) or 1.0
                ax.imshow(values, cmap=cmap, alpha=_ALPHA, vmin=-top if signed else 0.0, vmax=top,
                          interpolation="bilinear")
            ax.set_title(panel.title, fontsize=8)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def maps_figure(image: np.ndarray, classes: Sequence[ClassMaps], gradcam: Sequence[np.ndarray] | None = None,
                baseline_scores: Sequence[float] | None = None, title: str = "") -> Figure:
    """Fig. 2a for one image: a row per class with the input, each block's attention ``A_n``,
    ``Σ_n V_n``, ``Σ_n A_n ⊙ V_n`` and, given ``gradcam`` (one ``(H, W)`` map per class), the
    baseline's Grad-CAM++."""
    rows, labels = [], []
    for j, maps in enumerate(classes):
        row = [Panel("input")]
        row += [Panel(f"block {n + 1} attention", maps.attention[n]) for n in range(maps.attention.shape[0])]
        row += [Panel("value Σ V", maps.value, "signed"), Panel("Σ attention × value", maps.product, "signed")]
        if gradcam is not None:
            score = f" ({baseline_scores[j]:.2f})" if baseline_scores is not None else ""
            row.append(Panel(f"Grad-CAM++ GAP{score}", gradcam[j], "cam"))
        rows.append(row)
        labels.append(f"{maps.name} ({maps.score:.2f})")
    return grid_figure(image, rows, labels, title)


def block_figure(image: np.ndarray, classes: Sequence[ClassMaps], block: int,
                 gradcam: Sequence[np.ndarray] | None = None, baseline_scores: Sequence[float] | None = None,
                 title: str = "") -> Figure:
    """Fig. 2b for one image: block ``block`` (0-based)'s attention for each class side by side,
    and the baseline's Grad-CAM++ for the same classes below it."""
    rows = [[Panel("input")] + [Panel(f"{m.name} ({m.score:.2f})", m.attention[block]) for m in classes]]
    labels = [f"NOAH block {block + 1}"]
    if gradcam is not None:
        scores = baseline_scores if baseline_scores is not None else [float("nan")] * len(classes)
        rows.append([Panel("input")] + [Panel(f"{m.name} ({s:.2f})", g, "cam")
                                        for m, g, s in zip(classes, gradcam, scores)])
        labels.append("Grad-CAM++ GAP")
    return grid_figure(image, rows, labels, title)


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 110) -> bytes:
    """The figure rendered to PNG or SVG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()
