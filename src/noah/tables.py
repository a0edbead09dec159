"""Result tables: printed aligned, and written as CSV and Markdown (``noah benchmark``, ``noah compare``),
with the name of the CPU they were measured on."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

__all__ = ["format_cell", "markdown_table", "emit_table", "cpu_name"]


def format_cell(value: Any) -> str:
    """Four significant digits for floats (no decimals from 1000 up); anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``rows`` (dicts with the same keys, in column order) as a Markdown table."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def emit_table(
    rows: list[dict[str, Any]],
    title: str,
    stem: str,
    output: Path | None,
    notes: Sequence[str] = (),
    markdown_rows: list[dict[str, Any]] | None = None,
) -> None:
    """Print ``rows`` as an aligned table; with ``output``, write ``stem.csv`` (``rows``) and
    ``stem.md`` (``markdown_rows`` if given -- e.g. ``mean ± std`` in one cell -- else ``rows``,
    then the ``notes``) there."""
    if not rows:
        return
    shown = markdown_rows or rows
    header = list(shown[0])
    cells = [[format_cell(row[k]) for k in header] for row in shown]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print(title)
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    for note in notes:
        print(note)
    if output is None:
        return
    output.mkdir(parents=True, exist_ok=True)
    with open(output / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = f"## {title}\n\n" + markdown_table(shown) + "".join(f"\n{n}\n" for n in notes)
    (output / f"{stem}.md").write_text(text)
    print(f"wrote {output / (stem + '.csv')} and {output / (stem + '.md')}")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"
