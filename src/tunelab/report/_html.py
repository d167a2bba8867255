"""The HTML report of a run directory: one self-contained file, readable offline.

plotly.js is inlined once in the page head; each figure is a ``<div id="plot-...">`` with a small script that
draws it. The ids are stable (``PLOT_IDS``) so tests and users can find a plot.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.layout import RunLayout
from tunelab.report import _compression as compression
from tunelab.report import _model_figures as model_figs
from tunelab.report import _search_figures as search_figs
from tunelab.report._ensemble import ensemble_section
from tunelab.report._html_parts import Section as _Section
from tunelab.report._html_parts import finite as _finite
from tunelab.report._html_parts import fmt as _fmt
from tunelab.report._html_parts import table as _table
from tunelab.report._references import references_section
from tunelab.report._rundata import RunData, load_run, load_study

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["PLOT_IDS", "build_report"]

# Every plot a report can hold, by section; which ones a given run gets depends on its kind, task and study.
PLOT_IDS = {
    "history": "plot-history",
    "curves": "plot-curves",
    "timeline": "plot-timeline",
    "importance": "plot-importance",
    "parallel": "plot-parallel",
    "slice": "plot-slice",
    "pareto": "plot-pareto",
    "candidates": "plot-candidates",
    "confusion": "plot-confusion",
    "parity": "plot-parity",
    "residuals": "plot-residuals",
    "forecast": "plot-forecast",
    "training": "plot-training",
    "compression": "plot-compression",
    "compression-macs": "plot-compression-macs",
}

_PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def build_report(run_dir: str | Path, *, path: str | Path | None = None, storage: str | None = None) -> Path:
    """Write the run's HTML report (``run_dir/report.html`` unless ``path`` is given) and return its path.

    A tuned run gets the search (history, learning curves of every trial, importance, parallel coordinates,
    slices, the Pareto front of a multi-objective study), the honest selection (re-evaluated candidates with
    95% intervals), the test predictions and the final model's training curves; a trained run gets its
    curves, metrics and test predictions. Raises :class:`~tunelab.errors.DataError` when ``run_dir`` holds
    no finished run.

    ``storage`` is the study's database URL, password included: needed for a run tuned with ``--storage``
    and no study.db beside it, since ``summary.json`` keeps that URL without its password.
    """
    run = load_run(run_dir)
    study = load_study(run, storage=storage)
    drafts = _tune_sections(run, study) if run.kind == "tune" else []  # None: nothing to draw
    drafts += _prediction_sections(run)
    drafts += _compression_sections(run)
    drafts.append(
        _plot_section(
            "training",
            "Training curves of the final model" if run.kind == "tune" else "Training curves",
            model_figs.training_figure(run.epochs, best_epoch=run.best_epoch),
            note="Loss, validation metrics and learning rate per epoch; the dashed line marks the best epoch."
            + (
                " The refit trains on train + validation, so it has no validation curve."
                if run.kind == "tune"
                else ""
            ),
        )
    )
    sections = [s for s in drafts if s is not None]
    out = Path(path) if path is not None else RunLayout(run.run_dir).report
    out.write_text(_page(run, sections), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------- sections


def _tune_sections(run: RunData, study: optuna.Study | None) -> list[_Section | None]:
    import optuna.visualization as vis

    summary = run.summary
    metric = str(summary.get("metric", "objective"))
    sections: list[_Section | None] = []
    if study is not None:
        epochs_per_fold = (run.spec.get("train") or {}).get("epochs")
        n_folds = _n_folds(summary)
        sections += [
            _plot_section(
                "history",
                "Optimization history",
                search_figs.optuna_figure(vis.plot_optimization_history, study, metric=metric),
                note="Each completed trial's validation score in the search, and the best so far.",
            ),
            _plot_section(
                "curves",
                "Learning curves of all trials",
                search_figs.trial_curves_figure(
                    study, metric=metric, epochs_per_fold=epochs_per_fold, n_folds=n_folds
                ),
                note="The metric after every epoch. Pruned trials are grey and dotted, with a cross "
                "where the scheduler stopped them; the best trial is highlighted.",
            ),
            _plot_section(
                "timeline",
                "Trial timeline",
                search_figs.optuna_figure(
                    vis.plot_timeline,
                    study,
                    metric=metric,
                    height=min(900, max(260, 80 + 14 * len(study.trials))),
                ),
                note="When each trial ran, and how it ended.",
            ),
        ]
    sections.append(
        _plot_section(
            "importance",
            "Parameter importance",
            search_figs.importance_figure(summary.get("importance") or {}),
            note="How much of the score's variation each parameter explains (Optuna's importance evaluator).",
            empty="Importance needs at least two completed trials with different parameter values.",
        )
    )
    if study is not None:
        sections += [
            _plot_section(
                "parallel",
                "Parallel coordinates",
                search_figs.optuna_figure(vis.plot_parallel_coordinate, study, metric=metric, height=420),
                note="Each line is a completed trial; drag along an axis to select a range.",
            ),
            _plot_section(
                "slice",
                "Slice plots",
                search_figs.optuna_figure(vis.plot_slice, study, metric=metric, height=360),
                note="The score against each parameter on its own; colour is the trial number.",
            ),
        ]
        if len(study.directions) > 1:
            names = search_figs.objective_names(study, metric)
            sections.append(
                _plot_section(
                    "pareto",
                    "Pareto front",
                    search_figs.optuna_figure(
                        vis.plot_pareto_front, study, metric=metric, target_names=names
                    ),
                    note="Trials no other trial beats on every objective at once are on the front.",
                )
            )
    candidates = summary.get("candidates") or []
    sections.append(
        _plot_section(
            "candidates",
            "Re-evaluation of the top candidates",
            model_figs.candidates_figure(candidates, metric=metric),
            note="The best configurations of the search, trained again with fresh seeds on every fold. "
            "Their scores in the search are optimistic (they were selected for being high); the fresh runs "
            "are not. " + _winner_rule(summary),
            extra=_candidates_table(candidates, metric),
        )
    )
    sections.append(references_section(summary))
    sections.append(ensemble_section(summary))
    return sections


def _prediction_sections(run: RunData) -> list[_Section | None]:
    predictions = run.predictions
    if predictions is None:
        return []
    note = "On the test part, set aside before training and evaluated once."
    if run.task == "classification" and {"y_true", "y_pred"} <= set(predictions.columns):
        figure = model_figs.confusion_figure(predictions, class_names=run.class_names)
        extra = _per_class_table(model_figs.per_class_scores(predictions, class_names=run.class_names))
        return [_plot_section("confusion", "Confusion matrix (test)", figure, note=note, extra=extra)]
    sections = [
        _plot_section(
            "parity",
            "Predicted against actual (test)",
            model_figs.parity_figure(predictions, task=run.task),
            note=note,
        ),
        _plot_section(
            "residuals",
            "Residuals (test)",
            model_figs.residuals_figure(predictions, task=run.task),
            note="Residuals should scatter evenly around zero; a trend or a funnel shape shows a "
            "systematic error.",
        ),
    ]
    if run.task == "forecasting":
        sections.append(
            _plot_section(
                "forecast",
                "Forecast over the test period",
                model_figs.forecast_figure(predictions),
                note=note,
            )
        )
    return sections


def _compression_sections(run: RunData) -> list[_Section | None]:
    record = compression.compression_data(run.run_dir)
    if record is None:
        return []
    return [
        _plot_section(
            "compression",
            "Compression: the accuracy / latency / size front",
            compression.front_figure(record),
            note="Each trained compression candidate (grey), the non-dominated ones (colour: deflated "
            "size), the fp32 original and the pick. The dotted line is the lowest validation score "
            "--max-drop allows.",
            extra=compression.pick_paragraph(record) + compression.front_table(record),
        ),
        _plot_section(
            "compression-macs",
            "Compression: multiply-adds against measured latency",
            compression.macs_figure(record),
            note="What a multiply-add count predicts of latency, and what it misses: int8 changes latency "
            "and size at the same count, and sparsity changes neither latency nor the count.",
        ),
    ]


def _plot_section(
    key: str, title: str, figure: go.Figure | None, *, note: str = "", empty: str = "", extra: str = ""
) -> _Section | None:
    """A section with one plot; without a figure, a section saying why (``empty``) or none at all."""
    if figure is None:
        return _Section(key, title, f'<p class="empty">{html.escape(empty)}</p>') if empty else None
    body = (
        (f'<p class="note">{html.escape(note)}</p>' if note else "")
        + _plot_div(figure, PLOT_IDS[key])
        + extra
    )
    return _Section(key, title, body)


def _plot_div(figure: go.Figure, div_id: str) -> str:
    import plotly.io as pio

    return str(
        pio.to_html(
            figure,
            include_plotlyjs=False,
            full_html=False,
            div_id=div_id,
            config=_PLOT_CONFIG,
            default_width="100%",
            default_height=f"{figure.layout.height or 380}px",
        )
    )


def _n_folds(summary: Mapping[str, Any]) -> int:
    validation = str((summary.get("protocol") or {}).get("validation", ""))
    head = validation.split("-fold", 1)[0]
    return int(head) if "-fold" in validation and head.isdigit() else 1


# -------------------------------------------------------------------------------------------------- header


def _header(run: RunData) -> tuple[str, str]:
    """The page's title bar, and the summary section: key figures, configuration, protocol."""
    s = run.summary
    name = html.escape(str(s.get("name", run.run_dir.name)))
    if run.kind == "tune":
        metric = str(s.get("metric", ""))
        subtitle = f"tuned {s.get('task', '')} model · {metric} ({s.get('direction', '')})"
        best: dict[str, Any] = next(
            (c for c in s.get("candidates") or [] if c.get("trial") == s.get("best_trial")), {}
        )
        spread = f"± {best['std']:.2g} · " if best.get("n", 0) > 1 and _finite(best.get("std")) else ""
        trials = s.get("trials") or {}
        # search.refit: all: the delivered model then trained on the test rows too; the score is the recipe's
        tested = "the recipe, before its fit on every row" if s.get("trained_on_test") else ""
        cards = [
            (f"validation {metric}", _fmt(s.get("best_value")), f"{spread}trial {s.get('best_trial')}"),
            *((f"test {k}", _fmt(v), tested) for k, v in (s.get("test_metrics") or {}).items()),
            (
                "trials",
                str(trials.get("total", "")),
                f"{trials.get('complete', 0)} complete · {trials.get('pruned', 0)} pruned · "
                f"{trials.get('failed', 0)} failed",
            ),
            ("time", _duration(s.get("elapsed_seconds")), f"stopped by {s.get('stop_reason', '?')}"),
        ]
        details = (
            '<div class="columns"><div><h3>Best configuration</h3>'
            + _table(_flatten(s.get("best_params") or {}).items(), head=("parameter", "value"))
            + "</div><div><h3>Selection protocol</h3><dl>"
            + "".join(
                f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                for k, v in (s.get("protocol") or {}).items()
            )
            + "</dl></div></div>"
        )
    else:
        data, model, training = s.get("data") or {}, s.get("model") or {}, s.get("training") or {}
        subtitle = f"trained {s.get('task', '')} model · {model.get('type', '')} on {data.get('source', '')}"
        cards = [
            *((f"test {k}", _fmt(v), "") for k, v in (run.metrics.get("test") or {}).items()),
            ("epochs", str(training.get("epochs_run", "")), f"best epoch {training.get('best_epoch')}"),
            ("parameters", f"{model.get('n_parameters', 0):,}", str(model.get("type", ""))),
            ("time", _duration(s.get("elapsed_seconds")), str(training.get("device", ""))),
        ]
        rows = [
            (k, _fmt((run.metrics.get("val") or {}).get(k)), _fmt(v))
            for k, v in (run.metrics.get("test") or {}).items()
        ]
        sizes = " · ".join(
            f"{data.get(f'n_{part}', '?')} {word}"
            for part, word in (("train", "train"), ("val", "validation"), ("test", "test"))
        )
        details = (
            '<div class="columns"><div><h3>Metrics</h3>'
            + _table(rows, head=("metric", "validation", "test"))
            + "</div><div><h3>Data</h3><dl>"
            + f"<dt>source</dt><dd>{html.escape(str(data.get('source', '')))}</dd>"
            f"<dt>samples</dt><dd>{html.escape(sizes)}</dd>"
            f"<dt>input shape</dt><dd>{html.escape(str(data.get('input_shape', '')))}</dd></dl></div></div>"
        )
    card_html = "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div><div class="sub">{html.escape(sub)}</div></div>'
        for label, value, sub in cards
    )
    header = (
        f'<header><div class="wrap"><h1>{name}</h1>'
        f'<p class="subtitle">{html.escape(subtitle)}</p></div></header>'
    )
    return header, f'<section id="sec-summary"><div class="cards">{card_html}</div>{details}</section>'


def _winner_rule(summary: Mapping[str, Any]) -> str:
    """How the winner was chosen among the candidates, from ``summary.json``'s ``selection``."""
    selection = summary.get("selection")
    if not isinstance(selection, Mapping):
        return "The winner is the best mean."
    return f"The winner: {selection.get('rule')}. Here {selection.get('reason')}."


def _per_class_table(scores: pd.DataFrame) -> str:
    """Precision, recall, F1 and support per class, then their macro average."""
    rows = [
        (str(name), _fmt(row.precision), _fmt(row.recall), _fmt(row.f1), str(int(row.support)))
        for name, row in scores.iterrows()
    ]
    return _table(rows, head=("class", "precision", "recall", "F1", "test rows"))


def _candidates_table(candidates: list[Mapping[str, Any]], metric: str) -> str:
    rows = []
    for c in candidates:
        ci = c.get("ci95") or [math.nan, math.nan]
        interval = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if _finite(ci[0]) and _finite(ci[1]) else "—"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in _flatten(c.get("params") or {}).items())
        rows.append(
            (
                f"trial {c.get('trial')}",
                _fmt(c.get("search_value")),
                _fmt(c.get("mean")),
                _fmt(c.get("std")),
                interval,
                str(c.get("n", 0)),
                params,
            )
        )
    head = ("candidate", f"search {metric}", "mean", "std", "95% interval", "runs", "parameters")
    return _table(rows, head=head)


# ---------------------------------------------------------------------------------------------------- page


def _page(run: RunData, sections: list[_Section]) -> str:
    from plotly.offline import get_plotlyjs

    title = html.escape(f"{run.summary.get('name', run.run_dir.name)} · tunelab report")
    header, summary = _header(run)
    nav = '<a href="#sec-summary">Summary</a>' + "".join(
        f'<a href="#sec-{s.key}">{html.escape(s.title)}</a>' for s in sections
    )
    body = "".join(
        f'<section id="sec-{s.key}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style>"
        # plotly.js once, for every figure below; inlined so the file opens offline.
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"{header}<nav>{nav}</nav><main>{summary}{body}"
        f"<footer>tunelab {html.escape(_version())} · {stamp} · {html.escape(str(run.run_dir))}</footer>"
        "</main></body></html>\n"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tunelab")
    except PackageNotFoundError:
        return "(development)"


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.01}}`` → ``{"train.lr": 0.01}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=name + "."))
        else:
            flat[name] = value
    return flat


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "—"
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2937;
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#111827;color:#f9fafb;padding:28px 0 24px}
.wrap,main,nav{max-width:1180px;margin:0 auto;padding-left:24px;padding-right:24px}
h1{margin:0;font-size:26px;font-weight:650;letter-spacing:-.01em}
.subtitle{margin:4px 0 0;color:#9ca3af}
nav{display:flex;flex-wrap:wrap;gap:6px 18px;padding-top:14px;padding-bottom:6px;font-size:13px}
nav a{color:#2563eb;text-decoration:none}nav a:hover{text-decoration:underline}
section{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:18px 22px;margin:16px 0}
h2{margin:0 0 4px;font-size:18px;font-weight:620}
h3{margin:18px 0 8px;font-size:14px;text-transform:uppercase;letter-spacing:.04em;color:#6b7280}
.note{margin:0 0 8px;color:#6b7280;font-size:13.5px}
.empty{color:#9ca3af;font-style:italic}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;background:#fafafa}
.card .label{font-size:12px;color:#6b7280;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:640;font-variant-numeric:tabular-nums}
.card .sub{font-size:12px;color:#6b7280}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 32px}
table{border-collapse:collapse;width:100%;font-size:13.5px;font-variant-numeric:tabular-nums;margin-top:8px}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#4b5563;background:#f9fafb}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0;font-size:13.5px}
dt{color:#6b7280}dd{margin:0}
footer{color:#9ca3af;font-size:12px;text-align:center;padding:12px 0 28px}
"""
