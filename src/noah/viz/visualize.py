"""``noah visualize``: what NOAH looks at, per image and class, beside a GAP baseline's Grad-CAM++;
and ``--score``, whether that attention lands on the objects (SPEC §9, the paper's Fig. 2).

Per image it writes two PNG grids and, for the whole call, one self-contained ``index.html``:

* ``NN-<image>-maps.png`` (Fig. 2a): per shown class, each POCA block's attention, the value map,
  their product summed over blocks, and the baseline's Grad-CAM++ (with ``--baseline``);
* ``NN-<image>-block<k>.png`` (Fig. 2b): block ``k``'s attention for the shown classes side by
  side, and the baseline's Grad-CAM++ for the same classes.

The classes shown are ``--classes``, else the top-k predictions (multi-class) or the labels
scoring at least the threshold (multi-label).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from noah.data.digits import DEFAULT_NUM_VAL
from noah.engine.datasets import resolve_data
from noah.engine.distributed import DistEnv, resolve_device
from noah.errors import ConfigError, DataError
from noah.viz import html
from noah.viz.attention import ClassMaps, choose_classes, class_maps, noah_maps, parse_classes
from noah.viz.boxes import Scene, read_scenes
from noah.viz.figures import block_figure, figure_bytes, maps_figure
from noah.viz.gradcam import GradCAMPlusPlusMaps
from noah.viz.loaded import LoadedModel
from noah.viz.output import OutputFolder
from noah.viz.score import BoxScore, noah_attention_mass, score_maps

__all__ = ["add_arguments", "run", "load_models", "figure_names", "visualize_images", "score_scenes",
           "score_run"]

INDEX = "index.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to show the maps of")
    g = parser.add_argument_group("model")
    g.add_argument("--run", metavar="DIR", help="a run folder written by `noah train` (a NOAH head)")
    g.add_argument("--checkpoint", metavar="FILE|best|last|final", default=None,
                   help="the run's weights to use (as for `noah eval`; default final)")
    g.add_argument("--model", metavar="NAME", help="instead of --run: a paper model or timm name, with --weights")
    g.add_argument("--weights", metavar="FILE", help="with --model: an official NOAH checkpoint or model.safetensors")
    g.add_argument("--num-classes", type=int, default=1000, help="with --model: classes of the weights (default 1000)")
    g.add_argument("--class-names", metavar="FILE", help="with --model: a text file with one class name per line")
    g.add_argument("--task", choices=("multiclass", "multilabel"), default="multiclass", help="with --model")
    g.add_argument("--image-size", type=int, default=None, help="with --model: input size (default: the model's)")
    g.add_argument("--baseline", metavar="DIR", help="a GAP-head run of the same backbone: its Grad-CAM++ is shown "
                   "beside NOAH's maps (and scored with --score)")
    g = parser.add_argument_group("what to show")
    g.add_argument("--classes", nargs="+", metavar="CLASS", help="class names or indices to show for every image")
    g.add_argument("--top-k", type=int, default=3, help="multi-class: show the k best classes (default 3)")
    g.add_argument("--threshold", type=float, default=None, help="multi-label: show labels scoring at least this "
                   "(default: the run's)")
    g.add_argument("--block", type=int, default=1, help="the POCA block of the side-by-side figure (1-based; default 1)")
    g = parser.add_argument_group("score")
    g.add_argument("--score", action="store_true", help="measure how much attention (and, with --baseline, "
                   "Grad-CAM++) mass falls inside the present classes' boxes over the run's validation scenes")
    g.add_argument("--data", default=None, help="--score: annotated data to score on (a built-in name or a COCO "
                   "folder with boxes, same classes; default: the run's own data)")
    g.add_argument("--limit", type=int, default=None, help="--score: only the first N validation scenes")
    g.add_argument("--per-block", action="store_true", help="--score: also score each POCA block's attention alone")
    g.add_argument("--json", action="store_true", help="--score: print the scores as JSON")
    g = parser.add_argument_group("output")
    g.add_argument("--output", metavar="DIR", default=None, help="folder for the figures and index.html "
                   "(default RUN/visualize)")
    g.add_argument("--overwrite", action="store_true", help="replace files a previous call wrote there")
    g.add_argument("--dpi", type=int, default=110, help="resolution of the PNG figures (default 110)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, auto, ... (default cpu)")
    g.add_argument("--batch-size", type=int, default=16)


def load_models(args: argparse.Namespace) -> tuple[LoadedModel, LoadedModel | None]:
    """The NOAH model to show and the baseline (or ``None``) that the flags name."""
    device = resolve_device(args.device)
    if (args.run is None) == (args.model is None):
        raise ConfigError("give either --run DIR or --model NAME --weights FILE")
    if args.run is not None:
        loaded = LoadedModel.from_run(args.run, args.checkpoint, device)
    else:
        if args.weights is None:
            raise ConfigError("--model needs --weights FILE")
        names = None
        if args.class_names:
            names = [line.strip() for line in Path(args.class_names).read_text(encoding="utf-8").splitlines()
                     if line.strip()]
        loaded = LoadedModel.from_weights(args.model, args.weights, num_classes=args.num_classes, class_names=names,
                                          task=args.task, image_size=args.image_size, device=device)
    if not loaded.has_maps:
        raise ConfigError(f"{loaded.label} has a {loaded.model.head_type} head; `noah visualize` shows the maps of a "
                          "NOAH head (pass this run as --baseline of a NOAH run)")
    baseline = None
    if args.baseline is not None:
        baseline = LoadedModel.from_run(args.baseline, device=device)
        if baseline.class_names != loaded.class_names:
            raise ConfigError(f"--baseline {args.baseline} was trained on other classes than {loaded.label}")
    return loaded, baseline


def figure_names(images: Sequence[str], block: int) -> list[list[str]]:
    """Per image, the file names of its two figures (numbered, so equal file names cannot clash)."""
    return [[f"{i + 1:02d}-{Path(p).stem}-maps.png", f"{i + 1:02d}-{Path(p).stem}-block{block}.png"]
            for i, p in enumerate(images)]


def _check_same_frame(loaded: LoadedModel, baseline: LoadedModel) -> None:
    """Grad-CAM++ is overlaid on NOAH's input: both must see the image cropped and scaled alike."""
    def frame(m: LoadedModel) -> tuple:
        return m.config.image_size, m.config.crop_pct, m.config.train_crop

    if frame(loaded) != frame(baseline):
        raise ConfigError(f"--baseline {baseline.label} sees images at another size or crop than {loaded.label} "
                          "(image_size, crop_pct, train_crop differ); train it with the same data settings")


def _baseline_maps(cam: GradCAMPlusPlusMaps, paths: Sequence[str], chosen: list[list[int]],
                   size: tuple[int, int]) -> tuple[list[np.ndarray], torch.Tensor]:
    """The baseline's Grad-CAM++ per image (``(k, H, W)`` at NOAH's input ``size``) and its scores ``(B, M)``."""
    batch = cam.loaded.load_images(paths)
    maps = [F.interpolate(torch.as_tensor(g)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
            for g in cam.maps(batch, chosen)]
    return maps, cam.loaded.predict(batch)


def _image_section(path: str, out: OutputFolder, names: Sequence[str], picture: np.ndarray, maps: list[ClassMaps],
                   block: int, gradcam: np.ndarray | None, base_scores: list[float] | None,
                   label: str, dpi: int) -> tuple[list[Path], str]:
    """Write one image's two figures; returns their paths and the image's part of the page."""
    title = f"{Path(path).name} — {label}"
    fig_a = figure_bytes(maps_figure(picture, maps, gradcam, base_scores, title), dpi=dpi)
    fig_b = figure_bytes(block_figure(picture, maps, block, gradcam, base_scores, title), dpi=dpi)
    written = [out.write(names[0], fig_a), out.write(names[1], fig_b)]
    header, rows = ["class", "NOAH score"], [[m.name, m.score] for m in maps]
    caption_a = "Each POCA block's attention, the value map and their product summed over blocks"
    caption_b = f"Block {block + 1}'s attention for each class"
    if base_scores is not None:
        header.append("GAP score")
        rows = [row + [score] for row, score in zip(rows, base_scores)]
        caption_a += ", beside Grad-CAM++ of the GAP baseline"
        caption_b += ", Grad-CAM++ of the GAP baseline below"
    section = html.section(str(path), html.table(header, rows), html.image(fig_a, f"maps of {path}", caption_a),
                           html.image(fig_b, f"block {block + 1} of {path}", caption_b))
    return written, section


def visualize_images(loaded: LoadedModel, baseline: LoadedModel | None, images: Sequence[str],
                     out: OutputFolder, classes: Sequence[int] | None, top_k: int, threshold: float, block: int,
                     batch_size: int = 16, dpi: int = 110) -> list[Path]:
    """Write the two figures per image (block ``block`` is 0-based) and ``index.html`` into ``out``;
    returns the paths written, the page last."""
    cam = GradCAMPlusPlusMaps(baseline, batch_size) if baseline is not None else None
    names = figure_names(images, block + 1)
    written: list[Path] = []
    sections: list[str] = []
    try:
        for start in range(0, len(images), batch_size):
            paths = list(images[start : start + batch_size])
            batch = loaded.load_images(paths)
            output = noah_maps(loaded, batch)
            if block >= output.attention.shape[1]:
                raise ConfigError(f"--block {block + 1}: the head has {output.attention.shape[1]} blocks")
            scores = loaded.scores(output.logits)
            chosen = [list(classes) if classes else choose_classes(scores[i], loaded.task, top_k, threshold)
                      for i in range(len(paths))]
            size = (batch.shape[-2], batch.shape[-1])
            gradcams, base_scores = _baseline_maps(cam, paths, chosen, size) if cam is not None else (None, None)
            pictures = loaded.display(batch)
            for i, path in enumerate(paths):
                maps = class_maps(output, i, chosen[i], loaded.class_names, scores, size)
                base = [float(base_scores[i, c]) for c in chosen[i]] if base_scores is not None else None
                files, section = _image_section(path, out, names[start + i], pictures[i], maps, block,
                                                gradcams[i] if gradcams is not None else None, base, loaded.label, dpi)
                written += files
                sections.append(section)
    finally:
        if cam is not None:
            cam.close()
    subtitle = loaded.label + (f"; Grad-CAM++ baseline {baseline.label}" if baseline is not None else "")
    written.append(out.write(INDEX, html.page("NOAH attention maps", *sections, subtitle=subtitle)))
    return written


def score_scenes(loaded: LoadedModel, data: str | None = None, limit: int | None = None) -> list[Scene]:
    """The annotated validation scenes to score on: of the run's own data, or of ``data`` (a
    built-in name or a COCO folder with boxes, with the same classes; built-in scenes are drawn at
    the run's image size, only as many as ``limit`` asks for)."""
    config = loaded.config
    if data is not None and data != config.data:
        config = replace(config, data=data, task=None, data_size=(10, limit or DEFAULT_NUM_VAL))
    if config.data is None:
        raise ConfigError("--score needs annotated scenes: a run trained on COCO-format data with boxes "
                          "(e.g. --data digits-multilabel), or --data naming such data")
    info = resolve_data(config, DistEnv(device=loaded.device))
    scenes = read_scenes(info)
    if info.class_names != loaded.class_names:
        raise ConfigError(f"{info.name} has other classes than {loaded.label} was trained on")
    return scenes[:limit] if limit is not None else scenes


def score_run(loaded: LoadedModel, baseline: LoadedModel | None, scenes: Sequence[Scene], batch_size: int = 16,
              per_block: bool = False) -> list[BoxScore]:
    """The attention-in-box scores of NOAH (and, with ``per_block``, of each POCA block alone) and
    of the baseline's Grad-CAM++ over ``scenes``."""
    results = [score_maps(loaded, scenes, noah_attention_mass(loaded), "NOAH attention (sum over blocks)", batch_size)]
    if per_block:
        results += [score_maps(loaded, scenes, noah_attention_mass(loaded, n), f"NOAH block {n + 1} attention",
                               batch_size) for n in range(loaded.model.num_heads)]
    if baseline is not None:
        cam = GradCAMPlusPlusMaps(baseline, batch_size)
        try:
            results.append(score_maps(baseline, scenes, cam.maps, "Grad-CAM++", batch_size))
        finally:
            cam.close()
    return results


def run(args: argparse.Namespace) -> int:
    if not args.images and not args.score:
        raise ConfigError("give IMAGE files to visualize, or --score")
    if min(args.top_k, args.block, args.batch_size, args.dpi, 1 if args.limit is None else args.limit) < 1:
        raise ConfigError("--top-k, --block, --batch-size, --dpi and --limit must be at least 1")
    if args.images:
        if args.output is None and args.run is None:
            raise ConfigError("--model needs --output DIR for the figures")
        names = [n for pair in figure_names(args.images, args.block) for n in pair] + [INDEX]
        out = OutputFolder(args.output or Path(args.run) / "visualize", names, args.overwrite)
        for image in args.images:
            if not Path(image).is_file():
                raise DataError(f"image not found: {image}")
    loaded, baseline = load_models(args)
    if args.images:
        if baseline is not None:
            _check_same_frame(loaded, baseline)
        threshold = args.threshold if args.threshold is not None else loaded.config.threshold
        classes = parse_classes(args.classes, loaded.class_names) if args.classes else None
        written = visualize_images(loaded, baseline, args.images, out, classes, args.top_k, threshold,
                                   args.block - 1, args.batch_size, args.dpi)
        print(f"wrote {len(written) - 1} figures and {written[-1]}")
    if args.score:
        scenes = score_scenes(loaded, args.data, args.limit)
        results = score_run(loaded, baseline, scenes, args.batch_size, args.per_block)
        if args.json:
            print(json.dumps([r.to_dict() for r in results]))
        else:
            for result in results:
                print(result.describe())
    return 0
