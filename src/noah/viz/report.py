"""``noah report RUN_DIR... [--compare DIR]``: one self-contained HTML page for a run, several runs,
or a ``noah compare`` folder.

The page shows, per run, the configuration, the outcome and the metrics of every epoch; the
training curves of all runs together (:mod:`noah.viz.curves`); an attention gallery of a few
validation images that the run gets right and wrong (:mod:`noah.viz.gallery`); and, given a
comparison folder, its tables (every ``*.csv`` in it) and the runs found inside it.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from noah.engine.datasets import build_dataset, resolve_data
from noah.engine.distributed import DistEnv, resolve_device
from noah.engine.rundir import RunDir
from noah.errors import CheckpointError, ConfigError, DataError, NoahError
from noah.viz import html
from noah.viz.curves import RunCurves, curves_figure, read_curves
from noah.viz.figures import figure_bytes
from noah.viz.gallery import gallery_items
from noah.viz.loaded import LoadedModel
from noah.viz.output import OutputFolder

__all__ = ["add_arguments", "run", "find_runs", "build_report", "REPORT"]

REPORT = "report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders written by `noah train`")
    parser.add_argument("--compare", metavar="DIR", default=None,
                        help="a `noah compare` folder: its tables, and the runs inside it when no RUN_DIR is given")
    parser.add_argument("--output", metavar="FILE", default=None,
                        help=f"the page to write (default RUN_DIR/{REPORT} for one run, DIR/{REPORT} with --compare)")
    parser.add_argument("--overwrite", action="store_true", help="replace the page if it exists")
    parser.add_argument("--gallery", type=int, default=4, metavar="K",
                        help="per run, show up to K right and K wrong validation images with their maps (0: none)")
    parser.add_argument("--checkpoint", metavar="best|last|final", default=None,
                        help="the weights the galleries use (default final)")
    parser.add_argument("--device", default="cpu", help="device for the galleries (default cpu)")


def find_runs(folder: str | Path) -> list[Path]:
    """Run folders (holding a config and metrics) at or below ``folder``, in path order."""
    root = Path(folder)
    found = {p.parent for p in root.rglob(RunDir.METRICS) if (p.parent / RunDir.CONFIG).is_file()}
    return sorted(found)


def _read_summary(run: Path) -> dict[str, Any]:
    path = RunDir(run).file(RunDir.SUMMARY)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def _overview_row(curves: RunCurves, summary: dict[str, Any], epochs_planned: int) -> list[Any]:
    last = next((v for v in reversed(curves.val_metric) if v is not None), None)
    best = max((v, e) for v, e in zip(curves.val_metric, curves.epochs) if v is not None) if last is not None else None
    return [
        str(curves.folder), curves.model, curves.head, curves.task, f"{curves.epochs[-1]}/{epochs_planned}",
        last, f"{best[0]:.2f} (epoch {best[1]})" if best else "-",
        summary.get("wall_time_s", "-") if summary else "running or stopped",
    ]


def _metrics_table(curves: RunCurves, run: Path) -> str:
    records = RunDir(run).read_metrics()
    val_keys = [k for k in dict.fromkeys(k for r in records for k in (r.get("val") or {})) if k != "samples"]
    header = ["epoch", "train loss", "lr", "img/s", "epoch s"] + [f"val {k}" for k in val_keys]
    rows = []
    for r in records:
        train, val = r.get("train") or {}, r.get("val") or {}
        rows.append([r.get("epoch"), train.get("loss"), train.get("lr"), train.get("images_per_s"), train.get("time")]
                    + [val.get(k) for k in val_keys])
    return html.table(header, rows)


def _gallery_section(run: Path, count: int, checkpoint: str | None, device: str) -> str:
    try:
        loaded = LoadedModel.from_run(run, checkpoint, resolve_device(device))
        info = resolve_data(loaded.config, DistEnv(device=loaded.device))
        samples = build_dataset(loaded.config, info, "val", loaded.transform).samples
        items = gallery_items(loaded, samples, count)
    except (NoahError, OSError) as exc:  # a report of the rest is still worth having
        return f'<p class="note">No gallery: {html.escape(exc)}</p>'
    what = ("NOAH's attention summed over blocks and its product with the value map" if loaded.has_maps
            else "Grad-CAM++ (this run has no NOAH head)")
    if not items:
        return '<p class="note">No gallery: no validation images.</p>'
    right = sum(i.correct for i in items)
    note = (f'<p class="note">{right} right and {len(items) - right} wrong among the first validation images, '
            f"with {what}, per true and predicted class.</p>")
    return note + '<div class="gallery">' + "".join(html.image(i.png, i.caption, i.caption) for i in items) + "</div>"


def _compare_tables(folder: Path) -> str:
    parts = []
    for path in sorted(folder.glob("*.csv")):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read the comparison table {path}: {exc}") from exc
        if rows:
            parts.append(html.section(path.name, html.table(rows[0], rows[1:]), level=3))
    return "".join(parts)


def build_report(runs: Sequence[Path], compare: Path | None = None, gallery: int = 4, checkpoint: str | None = None,
                 device: str = "cpu") -> str:
    """The HTML page for ``runs`` (and the comparison folder ``compare``)."""
    curves = [read_curves(r) for r in runs]
    summaries = [_read_summary(r) for r in runs]
    configs = [RunDir(r).read_config() for r in runs]
    parts = []
    if compare is not None:
        tables = _compare_tables(compare)
        parts.append(html.section(f"Comparison: {compare}", tables or '<p class="note">No *.csv table in the folder.</p>'))
    overview = [_overview_row(c, s, cfg.epochs) for c, s, cfg in zip(curves, summaries, configs)]
    header = ["run", "model", "head", "task", "epochs", "final metric", "best", "wall time s"]
    parts.append(html.section("Runs", html.table(header, overview)))
    by_metric: dict[str, list[RunCurves]] = {}
    for c in curves:
        by_metric.setdefault(c.metric, []).append(c)
    figures = [html.image(figure_bytes(curves_figure(group), dpi=100), f"{metric} curves",
                          "One colour per run; validation solid, training dashed where recorded.")
               for metric, group in by_metric.items()]
    parts.append(html.section("Training curves", *figures))
    for run, c, s, cfg in zip(runs, curves, summaries, configs):
        config_rows = [[k, json.dumps(v) if isinstance(v, (list, dict)) else v] for k, v in cfg.to_dict().items()]
        body = [
            f'<p class="meta">{html.escape(c.name)} on {html.escape(s.get("data") or cfg.data or "?")}, {c.task}</p>',
            "<details><summary>Configuration</summary>" + html.table(["option", "value"], config_rows) + "</details>",
            html.section("Metrics per epoch", _metrics_table(c, run), level=3),
        ]
        if gallery > 0:
            body.append(html.section("Gallery", _gallery_section(run, gallery, checkpoint, device), level=3))
        parts.append(html.section(str(run), *body))
    if compare is not None:
        title = f"NOAH comparison: {compare.name}"
    else:
        title = f"NOAH run: {runs[0].name}" if len(runs) == 1 else f"NOAH runs: {len(runs)}"
    subtitle = f"written {datetime.now().strftime('%Y-%m-%d %H:%M')} by `noah report`"
    return html.page(title, *parts, subtitle=subtitle)


def run(args: argparse.Namespace) -> int:
    if args.gallery < 0:
        raise ConfigError("--gallery must be 0 or more")
    compare = Path(args.compare) if args.compare else None
    if compare is not None and not compare.is_dir():
        raise ConfigError(f"--compare: folder not found: {compare}")
    runs = [Path(r) for r in args.runs]
    if not runs and compare is not None:
        runs = find_runs(compare)
    if not runs:
        raise ConfigError("give RUN_DIR folders, or --compare DIR holding runs")
    for r in runs:
        if not RunDir(r).file(RunDir.CONFIG).is_file():
            raise CheckpointError(f"{r} is not a noah run folder: {RunDir.CONFIG} is missing")
    if args.output is not None:
        target = Path(args.output)
    elif compare is not None:
        target = compare / REPORT
    elif len(runs) == 1:
        target = runs[0] / REPORT
    else:
        raise ConfigError("several runs: pass --output FILE for the page")
    out = OutputFolder(target.parent, [target.name], args.overwrite)
    page = build_report(runs, compare, args.gallery, args.checkpoint, args.device)
    print(out.write(target.name, page))
    return 0
