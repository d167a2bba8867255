"""Pieces the HTML report's modules share: a section, a table, how a value is written."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Section", "finite", "fmt", "table"]


@dataclass(frozen=True)
class Section:
    key: str  # the anchor: id="sec-<key>"
    title: str
    body: str  # HTML


def table(rows: Any, *, head: tuple[str, ...]) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
