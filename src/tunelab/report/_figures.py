"""The report's figures, one function each; every one returns a plotly figure, or ``None`` when the run holds
too little to draw it (no completed trial, no predictions...). Optuna's own plots are used where they fit."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "candidates_figure",
    "confusion_figure",
    "forecast_figure",
    "importance_figure",
    "optuna_figure",
    "parity_figure",
    "residuals_figure",
    "training_figure",
    "trial_curves_figure",
]

FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
ACCENT = "#2563eb"
MUTED = "#9ca3af"
FAILED = "#dc2626"
BEST = "#f59e0b"
PALETTE = [ACCENT, "#16a34a", "#db2777", "#7c3aed", "#ea580c", "#0891b2", "#65a30d", "#4b5563"]

OptunaPlot = Callable[..., "go.Figure"]


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


# ------------------------------------------------------------------------------------------------- studies


def optuna_figure(
    plot: OptunaPlot, study: optuna.Study, *, metric: str, height: int = 380, **kwargs: Any
) -> go.Figure | None:
    """Call one of ``optuna.visualization``'s functions; multi-objective studies plot their first objective.

    ``None`` when the study has no completed trial (Optuna would draw an empty frame).
    """
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    if "target" in _parameters(plot):  # the plots of one objective; the Pareto front takes ``targets``
        if len(study.directions) > 1:
            kwargs.setdefault("target", lambda trial: trial.values[0])
            kwargs.setdefault("target_name", objective_names(study, metric)[0])
        else:
            kwargs.setdefault("target_name", metric)
    with warnings.catch_warnings():
        # Some plots are marked experimental; that is Optuna's notice to us, not to the report's reader.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fig = plot(study, **kwargs)
    return style(fig, height=height)


def objective_names(study: optuna.Study, metric: str) -> list[str]:
    """The study's objective names: its ``metric_names``, else ``metric`` then ``objective 1, 2...``."""
    if study.metric_names:
        return list(study.metric_names)
    return [metric] + [f"objective {i}" for i in range(1, len(study.directions))]


def _parameters(plot: OptunaPlot) -> set[str]:
    import inspect

    return set(inspect.signature(plot).parameters)


def trial_curves_figure(
    study: optuna.Study, *, metric: str, epochs_per_fold: int | None = None, n_folds: int = 1
) -> go.Figure | None:
    """The metric after every epoch of every trial: completed trials solid, pruned ones grey and dotted with
    an ✕ where they were stopped, failed ones red, the best trial highlighted. Folds run one after another,
    so with cross-validation the steps continue across fold boundaries (drawn as dotted lines)."""
    import optuna
    import plotly.graph_objects as go

    state = optuna.trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        return None
    best_number = _best_trial_number(study)
    fig = go.Figure()
    groups = (
        ("completed", state.COMPLETE, {"color": ACCENT, "width": 1.2}, 0.45),
        ("pruned", state.PRUNED, {"color": MUTED, "width": 1.0, "dash": "dot"}, 0.8),
        ("failed", state.FAIL, {"color": FAILED, "width": 1.0, "dash": "dash"}, 0.8),
    )
    for name, wanted, line, opacity in groups:
        members = [t for t in trials if t.state == wanted and t.number != best_number]
        if members:
            xs, ys, texts = _joined_curves(members)
            # Markers too: a trial stopped after its first epoch is a single point, which a line cannot show.
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    text=texts,
                    mode="lines+markers",
                    name=name,
                    line=line,
                    opacity=opacity,
                    marker={"size": 4, "color": line["color"]},
                    hovertemplate="%{text}<br>step %{x}<br>" + metric + " %{y:.4g}<extra></extra>",
                )
            )
    pruned = [t for t in trials if t.state == state.PRUNED]
    if pruned:
        last = [max(t.intermediate_values) for t in pruned]
        fig.add_trace(
            go.Scatter(
                x=last,
                y=[t.intermediate_values[s] for t, s in zip(pruned, last, strict=True)],
                text=[f"trial {t.number} stopped" for t in pruned],
                mode="markers",
                name="stopped here",
                marker={"symbol": "x", "size": 8, "color": "#6b7280"},
                hovertemplate="%{text} after step %{x}<extra></extra>",
            )
        )
    best = next((t for t in trials if t.number == best_number), None)
    if best is not None:
        xs, ys, texts = _joined_curves([best])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                text=texts,
                mode="lines+markers",
                name=f"best (trial {best.number})",
                line={"color": BEST, "width": 3},
                marker={"size": 5},
                hovertemplate="%{text}<br>step %{x}<br>" + metric + " %{y:.4g}<extra></extra>",
            )
        )
    if epochs_per_fold and n_folds > 1:
        for fold in range(1, n_folds):
            fig.add_vline(x=fold * epochs_per_fold + 0.5, line={"color": MUTED, "dash": "dot", "width": 1})
    fig.update_xaxes(title_text="epoch" if n_folds == 1 else "epoch (folds one after another)")
    fig.update_yaxes(title_text=metric)
    return style(fig)


def _best_trial_number(study: optuna.Study) -> int | None:
    if len(study.directions) > 1:
        return None
    try:
        return study.best_trial.number
    except ValueError:  # no completed trial
        return None


def _joined_curves(trials: Sequence[optuna.trial.FrozenTrial]) -> tuple[list[Any], list[Any], list[Any]]:
    """Many curves as one trace: ``None`` between them breaks the line (one trace, not hundreds)."""
    xs: list[Any] = []
    ys: list[Any] = []
    texts: list[Any] = []
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        xs += [*steps, None]
        ys += [*(trial.intermediate_values[s] for s in steps), None]
        texts += [f"trial {trial.number}"] * len(steps) + [None]
    return xs, ys, texts


def importance_figure(importance: Mapping[str, float]) -> go.Figure | None:
    """Horizontal bars of the importances written in the summary (Optuna's evaluator, computed once)."""
    import plotly.graph_objects as go

    if not importance:
        return None
    ranked = sorted(importance.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in ranked],
            y=[k for k, _ in ranked],
            orientation="h",
            marker_color=ACCENT,
            text=[f"{v:.2f}" for _, v in ranked],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="importance (share of the objective's variance)", rangemode="tozero")
    return style(fig, height=max(220, 60 + 36 * len(ranked)))


# ----------------------------------------------------------------------------------------------- selection


def candidates_figure(candidates: Sequence[Mapping[str, Any]], *, metric: str) -> go.Figure | None:
    """Per candidate: its score in the search (hollow), each fresh re-evaluation run (dots), and their mean
    with the 95% t-interval. The gap between the search score and the mean is the search's optimism."""
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
