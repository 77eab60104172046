"""The HTML building blocks of the report pages: the head of a self-contained page (inline
style), escaped text, tables, table cells of a mean with its interval and embedded PNG figures."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence

from cilaudio.stats import fmt_interval, interval

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
th:first-child,td:first-child{text-align:left}
th{background:#eee}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
figure{margin:1em 0}
figure img{max-width:100%}
.note{color:#555;font-size:.92em}
dt{font-weight:bold;margin-top:.4em}
dd{white-space:pre-wrap;margin-left:1.5em}
"""


def escape(x: Any, *, quote: bool = True) -> str:
    """``str(x)`` escaped for HTML text and attribute values (for text alone with ``quote=False``:
    quotes kept as they are)."""
    return html.escape(str(x), quote=quote)


def html_head(title: str) -> list[str]:
    """The opening lines of a self-contained page (inline style), up to its <h1>."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table (in a horizontally scrolling box) of a header row and rows of cells, escaped."""
    parts = ['<div class="scroll"><table>', "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def no_break(text: str) -> str:
    """A table cell that may wrap only between the mean and its interval: no-break spaces inside
    ``[low, high]`` and before ``%``."""
    return text.replace(", ", ",\u00a0").replace(" %", "\u00a0%")


def interval_cell(values: Any) -> str:
    """Table cell: the mean over seeds with its 95 % t-interval (the mean alone with one seed)."""
    return no_break(fmt_interval(interval(values)))


def percent_interval_cell(values: Any) -> str:
    """:func:`interval_cell` of shares, in percent with one decimal."""
    return no_break(fmt_interval(interval(values), 1, scale=100, unit=" %"))


def figure_html(caption: str, path: str | os.PathLike) -> str:
    """A figure with its caption, the PNG at ``path`` embedded as base64; ValueError for a file
    that is not a PNG."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")
