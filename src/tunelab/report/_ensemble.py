"""The report's ensemble section: whether the top candidates' runs, averaged, were delivered, and why."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from tunelab.report._html_parts import Section, fmt, table

__all__ = ["ensemble_section"]

_NOTE = (
    "The re-evaluation runs of the top candidates, averaged (probabilities for classification, outputs for "
    "regression and forecasts) with weights from greedy selection on the validation loss. The ensemble is "
    "delivered only when it beats the single winner on validation rows that did not choose it (the gain); "
    "both are tested once, after that choice."
)


def ensemble_section(summary: Mapping[str, Any]) -> Section | None:
    """The section for a tuning run's ``summary.json``; ``None`` for a run from before ensembles."""
    ensemble = summary.get("ensemble")
    if not isinstance(ensemble, Mapping):
        return None
    metric = str(summary.get("metric", ""))
    verdict = "Delivered" if ensemble.get("delivered") else "Not delivered"
    body = (
        f'<p class="note">{html.escape(_NOTE)}</p>'
        f"<p><strong>{verdict}</strong>: {html.escape(str(ensemble.get('reason', '')))}</p>"
    )
    members = ensemble.get("members") or []
    if members:
        rows = [
            (f"trial {m.get('trial')}", m.get("run_seed"), m.get("delivered_seed", "—"), m.get("weight"))
            for m in members
        ]
        body += table(rows, head=("member", "seed of its validation run", "seed delivered", "weight"))
    validation = ensemble.get("validation") or {}
    if validation:
        body += table(
            [
                (f"ensemble {metric}", validation.get("ensemble"), validation.get("ensemble_in_sample")),
                (f"single winner {metric}", validation.get("single_winner"), "—"),
                ("gain (positive: the ensemble is better)", validation.get("gain"), "—"),
            ],
            head=("validation", "on rows that did not choose it", "on all rows (chose the weights)"),
        )
    tests = [("single winner", ensemble.get("single_winner_test_metrics") or {})]
    if ensemble.get("test_metrics"):
        tests.insert(0, ("ensemble", ensemble["test_metrics"]))
    names = list(tests[-1][1])
    body += table(
        [(who, *(fmt(values.get(k)) for k in names)) for who, values in tests], head=("test", *names)
    )
    return Section("ensemble", "Ensemble of the top candidates", body)
