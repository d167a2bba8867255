"""The report's figures of the chosen model, one function each: the re-evaluated candidates with their
intervals, the test predictions (confusion matrix, parity, residuals, forecast), the training curves. Each
returns a plotly figure, or ``None`` when the run holds too little to draw it (no predictions...)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tunelab.report._figure_style import ACCENT, BEST, MUTED, PALETTE, style

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "candidates_figure",
    "confusion_figure",
    "forecast_figure",
    "parity_figure",
    "per_class_scores",
    "residuals_figure",
    "training_figure",
]


# ----------------------------------------------------------------------------------------------- selection


def candidates_figure(candidates: Sequence[Mapping[str, Any]], *, metric: str) -> go.Figure | None:
    """Per candidate: its score in the search (hollow), each fresh re-evaluation run (dots), and their mean
    with its 95% interval. The gap between the search score and the mean is the search's optimism."""
    import plotly.graph_objects as go

    if not candidates:
        return None
    fig = go.Figure()
    labels = [f"trial {c['trial']}" for c in candidates]
    xs_runs: list[float] = []
    ys_runs: list[float] = []
    for i, cand in enumerate(candidates):
        scores = [s for s in cand.get("scores", []) if _finite(s)]
        spread = np.linspace(-0.12, 0.12, len(scores)) if len(scores) > 1 else np.zeros(len(scores))
        xs_runs += [i + float(d) for d in spread]
        ys_runs += scores
    fig.add_trace(
        go.Scatter(
            x=xs_runs,
            y=ys_runs,
            mode="markers",
            name="fresh runs (seeds × folds)",
            marker={"color": ACCENT, "size": 7, "opacity": 0.45},
            hovertemplate=metric + " %{y:.4g}<extra></extra>",
        )
    )
    means = [c.get("mean") if _finite(c.get("mean")) else None for c in candidates]
    low, high = [], []
    for cand, mean in zip(candidates, means, strict=True):
        ci = cand.get("ci95") or [None, None]
        ok = mean is not None and _finite(ci[0]) and _finite(ci[1])
        low.append(mean - ci[0] if ok else 0.0)
        high.append(ci[1] - mean if ok else 0.0)
    fig.add_trace(
        go.Scatter(
            x=list(range(len(candidates))),
            y=means,
            mode="markers",
            name="mean, 95% interval",
            marker={"color": "#111827", "size": 11, "symbol": "diamond"},
            error_y={"type": "data", "array": high, "arrayminus": low, "color": "#111827", "thickness": 1.5},
            hovertemplate="mean %{y:.4g}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[i + 0.3 for i in range(len(candidates))],
            y=[c.get("search_value") for c in candidates],
            mode="markers",
            name="score in the search",
            marker={"color": BEST, "size": 10, "symbol": "circle-open", "line": {"width": 2}},
            hovertemplate="search %{y:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(tickvals=list(range(len(candidates))), ticktext=labels, range=[-0.6, len(labels) - 0.3])
    fig.update_yaxes(title_text=metric)
    return style(fig, height=360)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --------------------------------------------------------------------------------------------- predictions


def per_class_scores(predictions: pd.DataFrame, *, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support of each class on the test predictions (``y_true`` / ``y_pred``
    class ids), one row per class (named by ``class_names`` when they fit), then a ``macro average`` row."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    y_true = predictions["y_true"].to_numpy(dtype=np.int64)
    y_pred = predictions["y_pred"].to_numpy(dtype=np.int64)
    n_proba = sum(1 for c in predictions.columns if str(c).startswith("proba_"))
    n_classes = max(n_proba, int(max(y_true.max(), y_pred.max())) + 1)
    labels = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0.0
    )
    names = list(class_names) if class_names and len(class_names) == n_classes else [str(k) for k in labels]
    frame = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support}, index=names
    )
    frame.loc["macro average"] = [precision.mean(), recall.mean(), f1.mean(), support.sum()]
    return frame


def confusion_figure(predictions: pd.DataFrame, *, class_names: Sequence[str] | None = None) -> go.Figure:
    """Test-set confusion matrix: counts as text, colour = share of the true class's row (recall)."""
    import plotly.graph_objects as go

    y_true = predictions["y_true"].to_numpy(dtype=np.int64)
    y_pred = predictions["y_pred"].to_numpy(dtype=np.int64)
    n_proba = sum(1 for c in predictions.columns if str(c).startswith("proba_"))
    n_classes = max(n_proba, int(max(y_true.max(), y_pred.max())) + 1)
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    names = list(class_names) if class_names and len(class_names) == n_classes else None
    labels = names or [str(k) for k in range(n_classes)]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=labels,
            y=labels,
            text=counts,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "share of row"}, "tickformat": ".0%"},
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text} samples (%{z:.0%} of the row)"
            "<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="predicted class", type="category")
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed")
    size = min(640, 240 + 34 * n_classes)
    return style(fig, height=size)


def target_columns(predictions: pd.DataFrame) -> list[int]:
    """The target (or horizon) indices ``k`` with both ``y_true_k`` and ``y_pred_k`` columns, in order."""
    found = {int(m.group(1)) for c in predictions.columns if (m := re.fullmatch(r"y_true_(\d+)", str(c)))}
    return sorted(k for k in found if f"y_pred_{k}" in predictions.columns)


def parity_figure(predictions: pd.DataFrame, *, task: str) -> go.Figure | None:
    """Predicted against actual values on the test set, one colour per target; the diagonal is perfect."""
    import plotly.graph_objects as go

    targets = target_columns(predictions)
    if not targets:
        return None
    fig = go.Figure()
    lowest, highest = math.inf, -math.inf
    for k in targets:
        true = predictions[f"y_true_{k}"].to_numpy(dtype=float)
        pred = predictions[f"y_pred_{k}"].to_numpy(dtype=float)
        lowest = min(lowest, float(np.nanmin(true)), float(np.nanmin(pred)))
        highest = max(highest, float(np.nanmax(true)), float(np.nanmax(pred)))
        fig.add_trace(
            go.Scatter(
                x=true,
                y=pred,
                mode="markers",
                name=_target_name(k, task),
                marker={"size": 6, "opacity": 0.6},
                hovertemplate="actual %{x:.4g}<br>predicted %{y:.4g}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[lowest, highest],
            y=[lowest, highest],
            mode="lines",
            name="perfect",
            line={"color": MUTED, "dash": "dash"},
            hoverinfo="skip",
        )
    )
    # The same range on both axes, so the diagonal is at 45° and over- and under-prediction look alike.
    pad = 0.04 * (highest - lowest or 1.0)
    fig.update_xaxes(title_text="actual", range=[lowest - pad, highest + pad])
    fig.update_yaxes(title_text="predicted", range=[lowest - pad, highest + pad])
    return style(fig, height=440)


def residuals_figure(predictions: pd.DataFrame, *, task: str) -> go.Figure | None:
    """Residuals (actual − predicted) against the prediction, and their distribution."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    targets = target_columns(predictions)
    if not targets:
        return None
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35], horizontal_spacing=0.1)
    for index, k in enumerate(targets):
        pred = predictions[f"y_pred_{k}"].to_numpy(dtype=float)
        residual = predictions[f"y_true_{k}"].to_numpy(dtype=float) - pred
        color = PALETTE[index % len(PALETTE)]
        name = _target_name(k, task)
        fig.add_trace(
            go.Scatter(
                x=pred,
                y=residual,
                mode="markers",
                name=name,
                legendgroup=name,
                marker={"size": 6, "opacity": 0.6, "color": color},
                hovertemplate="predicted %{x:.4g}<br>residual %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Histogram(
                x=residual,
                name=name,
                legendgroup=name,
                showlegend=False,
                marker_color=color,
                opacity=0.6,
            ),
            row=1,
            col=2,
        )
    fig.add_hline(y=0, line={"color": MUTED, "dash": "dash"}, row=1, col=1)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="predicted", row=1, col=1)
    fig.update_yaxes(title_text="actual − predicted", row=1, col=1)
    fig.update_xaxes(title_text="residual", row=1, col=2)
    fig.update_yaxes(title_text="count", row=1, col=2)
    return style(fig, height=380)


def forecast_figure(predictions: pd.DataFrame) -> go.Figure | None:
    """The test windows in time order: the actual next value and the one-step-ahead forecast."""
    import plotly.graph_objects as go

    if 0 not in target_columns(predictions):
        return None
    steps = list(range(len(predictions)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=predictions["y_true_0"], mode="lines", name="actual"))
    fig.add_trace(
        go.Scatter(x=steps, y=predictions["y_pred_0"], mode="lines", name="forecast (1 step ahead)")
    )
    fig.update_xaxes(title_text="test window (time order)")
    fig.update_yaxes(title_text="target")
    return style(fig, height=340)


def _target_name(k: int, task: str) -> str:
    return f"horizon {k + 1}" if task == "forecasting" else f"target {k}"


# ------------------------------------------------------------------------------------------------ training


def training_figure(
    epochs: Sequence[Mapping[str, Any]], *, best_epoch: int | None = None
) -> go.Figure | None:
    """The final model's curves: loss (train, validation), validation metrics if any, learning rate."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not epochs:
        return None
    xs = [int(row.get("epoch", i + 1)) for i, row in enumerate(epochs)]
    metric_keys = sorted(
        {
            k
            for row in epochs
            for k, v in row.items()
            if k.startswith("val_") and k != "val_loss" and _finite(v)
        }
    )
    titles = ["loss", *(["validation metrics"] if metric_keys else []), "learning rate"]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    for key, label, color in (("loss", "train loss", ACCENT), ("val_loss", "validation loss", PALETTE[2])):
        ys = [_number_or_none(row.get(key)) for row in epochs]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=xs, y=ys, name=label, mode="lines+markers", line_color=color), 1, 1)
    for index, key in enumerate(metric_keys):
        color = PALETTE[(index + 3) % len(PALETTE)]
        ys = [_number_or_none(row.get(key)) for row in epochs]
        fig.add_trace(go.Scatter(x=xs, y=ys, name=key, mode="lines+markers", line_color=color), 1, 2)
    lrs = [_number_or_none(row.get("lr")) for row in epochs]
    fig.add_trace(
        go.Scatter(x=xs, y=lrs, name="learning rate", mode="lines", line_color="#4b5563", showlegend=False),
        1,
        len(titles),
    )
    positive = [v for v in lrs if v is not None and v > 0]
    if len(positive) == len(lrs) and max(positive) > 10 * min(positive):  # a schedule spanning decades
        fig.update_yaxes(type="log", row=1, col=len(titles))
    elif positive:  # from zero: plotly centres a constant line on a ±1 range, which reads as "lr = 0"
        fig.update_yaxes(range=[0, 1.15 * max(positive)], row=1, col=len(titles))
    if best_epoch is not None:
        for col in range(1, len(titles)):
            fig.add_vline(x=best_epoch, line={"color": MUTED, "dash": "dash", "width": 1}, row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    style(fig, height=380)
    # Below the panels: above them the legend would sit on the subplot titles.
    fig.update_layout(legend={"yanchor": "top", "y": -0.22}, margin={"t": 40, "b": 90})
    return fig


def _number_or_none(value: Any) -> float | None:
    return float(value) if _finite(value) else None
