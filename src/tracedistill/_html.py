"""Small HTML and text renderers shared by the records a notebook displays.

Every result object a notebook shows (results, plans, evaluations, generation and training
summaries) has a text form and an HTML form (``_repr_html_``); these helpers keep the two
consistent. Values are escaped; nothing here reads or writes files.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["cell_text", "fields_html", "fields_text", "table_html", "table_markdown"]


def cell_text(value: Any) -> str:
    """A table cell's text: ``—`` for a missing value, ``yes``/``no`` for a flag."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def table_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as a Markdown table (columns in order of first appearance)."""
    if not rows:
        return "(empty)"
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines.extend("| " + " | ".join(cell_text(r.get(c)) for c in cols) + " |" for r in rows)
    return "\n".join(lines)


def table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as an HTML table (columns in order of first appearance)."""
    if not rows:
        return "<p>(empty)</p>"
    cols = _columns(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell_text(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fields_text(title: str, fields: Mapping[str, Any]) -> str:
    """A title line and one indented ``name: value`` line per field."""
    width = max((len(k) for k in fields), default=0)
    lines = [title]
    lines.extend(f"  {k + ':':<{width + 1}} {cell_text(v)}" for k, v in fields.items())
    return "\n".join(lines)


def fields_html(title: str, fields: Mapping[str, Any]) -> str:
    """A bold title and a two-column (name, value) HTML table."""
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(cell_text(v))}</td></tr>"
        for k, v in fields.items()
    )
    return f"<p><b>{html.escape(title)}</b></p><table><tbody>{body}</tbody></table>"
