"""The report's figures of the search (the Optuna study), one function each: Optuna's own plots where they fit
(history, timeline, parallel coordinates, slices, Pareto front), every trial's learning curve, the parameters'
importance. Each returns a plotly figure, or ``None`` when the study holds too little to draw it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tunelab.report._figure_style import ACCENT, BEST, FAILED, MUTED, style

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = ["importance_figure", "optuna_figure", "trial_curves_figure"]

OptunaPlot = Callable[..., "go.Figure"]


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
