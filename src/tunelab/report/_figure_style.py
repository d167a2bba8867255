"""The look every figure of the report shares: the page's font, its colours, and :func:`style`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["ACCENT", "BEST", "FAILED", "FONT", "MUTED", "PALETTE", "style"]

FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
ACCENT = "#2563eb"
MUTED = "#9ca3af"
FAILED = "#dc2626"
BEST = "#f59e0b"
PALETTE = [ACCENT, "#16a34a", "#db2777", "#7c3aed", "#ea580c", "#0891b2", "#65a30d", "#4b5563"]


def style(fig: go.Figure, *, height: int = 380) -> go.Figure:
    """One look for every figure: white template, the page's font, no title (the section heading is one)."""
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 64, "r": 24, "t": 36, "b": 56},
        font={"family": FONT, "size": 13, "color": "#1f2937"},
        colorway=PALETTE,
        title_text="",
        width=None,  # the page's width: some Optuna plots fix theirs (300 px per parameter) and overflow
        autosize=True,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
    )
    return fig
