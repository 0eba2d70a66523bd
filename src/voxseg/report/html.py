"""HTML building blocks: escaping, number formatting, tables, the page frame."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from typing import Any

from voxseg.data.colors import label_color

__all__ = [
    "Markup",
    "details",
    "fmt",
    "json_block",
    "kv_table",
    "label_color",
    "link_cell",
    "page",
    "table",
]


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: NaN as an en dash, inf as ∞."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return escape(value)
    v = float(value)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10**-(digits)):
        return f"{v:.{digits - 1}e}"
    if float(v).is_integer() and abs(v) < 1e5:
        return str(int(v))
    return f"{v:.{digits}g}" if abs(v) >= 10**digits else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def sort_key(value: Any) -> str:
    """``data-sort`` value of a cell: numbers sort numerically (NaN last), text as text."""
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return ""
        return "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(v)
    return str(value)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    cls: str = "",
    table_id: str = "",
    raw: bool = False,
) -> str:
    """A table; cells are values (formatted), or ``(html, sort_value)`` pairs when ``raw``."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if raw and isinstance(cell, tuple):
                html, key = cell
                cells.append(f'<td data-sort="{escape(sort_key(key))}">{html}</td>')
            else:
                cells.append(f'<td data-sort="{escape(sort_key(cell))}">{fmt(cell)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    attrs = f' class="{cls}"' if cls else ""
    attrs += f' id="{table_id}"' if table_id else ""
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{v if isinstance(v, Markup) else fmt(v)}</td></tr>"
        for k, v in items
    )
    return f'<table class="kv">{rows}</table>'


class Markup(str):
    """Text that is already HTML (not escaped again)."""


def link_cell(text: str, href: str | None) -> tuple[Markup, str]:
    """A raw :func:`table` cell showing ``text``, a link to ``href`` when there is one,
    sorted by ``text``."""
    html = f"<a href='{escape(href)}'>{escape(text)}</a>" if href else escape(text)
    return Markup(html), text


def details(summary: str, body: str, open_: bool = False) -> str:
    return (
        f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>{body}</details>"
    )


def json_block(data: Any) -> str:
    return f"<pre class='json'>{escape(json.dumps(data, indent=2, allow_nan=True))}</pre>"


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element (``</`` cannot close it)."""
    return json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")


def page(title: str, body: str, *, root: str = "", scripts: Sequence[str] = ()) -> str:
    """A complete page linking the report's own CSS and scripts (relative paths only)."""
    js = "".join(f'<script src="{root}assets/{s}"></script>' for s in scripts)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # No request leaves the file system: only the report's own files may load.
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'self' file: data: blob: 'unsafe-inline'\">"
        f"<title>{escape(title)}</title>"
        f"<link rel='stylesheet' href='{root}assets/report.css'></head>"
        f"<body>{body}{js}</body></html>"
    )
