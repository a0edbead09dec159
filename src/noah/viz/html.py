"""Self-contained HTML pages: one file with inline CSS and every image as a ``data:`` URI, so it
opens offline, can be mailed or archived, and fetches nothing from anywhere."""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

__all__ = ["escape", "image", "table", "section", "page"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; } h3 { font-size: 1.05em; }
.meta { color: #555; } .note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f6; } td.text, th.text { text-align: left; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8em; } .gallery figure { margin: 0; max-width: 560px; }
details summary { cursor: pointer; color: #333; }
"""


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def image(png: bytes, alt: str, caption: str = "") -> str:
    """A ``<figure>`` holding the PNG bytes as a data URI (and a caption)."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}">{cap}</figure>'


def _cell(value: Any, tag: str) -> str:
    if isinstance(value, float):
        return f"<{tag}>{value:.4g}</{tag}>" if abs(value) < 1e-2 and value != 0 else f"<{tag}>{value:.2f}</{tag}>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<{tag}>{value}</{tag}>"
    return f'<{tag} class="text">{escape("" if value is None else value)}</{tag}>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; floats are shown with two decimals (small ones with four significant digits)."""
    head = "".join(_cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(_cell(v, "td") for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, *parts: str, level: int = 2) -> str:
    return f"<section><h{level}>{escape(title)}</h{level}>{''.join(parts)}</section>"


def page(title: str, *parts: str, subtitle: str = "") -> str:
    """A complete HTML document."""
    sub = f'<p class="meta">{escape(subtitle)}</p>' if subtitle else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{escape(title)}</h1>{sub}{''.join(parts)}</body></html>\n")
