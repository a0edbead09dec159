"""The HTML building blocks: escaped text, embedded images, nothing fetched."""

from __future__ import annotations

from pathlib import Path

from noah.viz import html


def test_a_page_embeds_its_images_and_escapes_text(tmp_path: Path, self_contained) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    body = html.section("a <b> & c", html.table(["x", "y"], [[1, 0.5], ["<i>", 0.000123]]), html.image(png, "alt", "cap"))
    page = tmp_path / "p.html"
    page.write_text(html.page("t <x>", body, subtitle="s"), encoding="utf-8")
    assert self_contained(page) == [png]
    text = page.read_text()
    assert "a &lt;b&gt; &amp; c" in text and "&lt;i&gt;" in text and "<td>0.50</td>" in text and "0.000123" in text
