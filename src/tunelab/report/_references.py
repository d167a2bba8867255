"""The report's "Against simple forecasts" section: a forecasting winner beside seasonal naive and lagged
ridge (``summary.json``'s ``references``, computed by ``tunelab.tune``)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from tunelab.report._html_parts import Section

__all__ = ["references_section"]

_NAMES = {"winner": "the tuned model", "lagged_ridge": "lagged ridge", "seasonal_naive": "seasonal naive"}


def references_section(summary: Mapping[str, Any]) -> Section | None:
    """The section, or None for a run without references (not a forecasting run, or an older summary)."""
    references = summary.get("references")
    if not isinstance(references, Mapping):
        return None
    rows = []
    for name, label in _NAMES.items():
        cells = [label]
        for part in ("validation", "test"):
            figures = (references.get(part) or {}).get(name) or {}
            cells += [_fmt(figures.get("rmse")), _fmt(figures.get("mae"))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ("forecast", "validation RMSE", "validation MAE", "test RMSE", "test MAE")
    )
    note = (
        f"Errors in the target's units. Season {references.get('season')} "
        f"({references.get('season_from', '')}). {references.get('how', '')} The tuned model's validation "
        "figure is its re-evaluation's mean of the search metric."
    )
    body = (
        f'<p class="note">{html.escape(note)}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return Section("references", "Against simple forecasts", body)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and math.isfinite(value) else "—"
