"""The report's compression sections (``compression.json`` of ``tunelab compress``): the front, the pick.

Two plots: validation score against latency at the throughput batch (size as colour, the original and the pick
marked), and multiply-adds against measured latency (what a MAC count predicts, and what it does not:
int8 and sparsity change latency and size, not MACs).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from tunelab.report._figure_style import style
from tunelab.report._html_parts import fmt, table

__all__ = ["compression_data", "front_figure", "front_table", "macs_figure", "pick_paragraph"]


def compression_data(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/compression.json``, or None when the run was never compressed (or the file is unreadable)."""
    try:
        record = json.loads((run_dir / "compression.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "front" in record else None


def _batch(record: Mapping[str, Any]) -> str:
    return str(max(record["settings"]["batches"]))


def front_figure(record: Mapping[str, Any]) -> go.Figure:
    batch = _batch(record)
    metric = str(record.get("metric", "score"))
    every = record.get("all") or []
    front = record.get("front") or []
    original = record["original"]
    pick = record["pick"].get("trial")
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[e["latency_ms"][batch] for e in every],
            y=[e["val_score"] for e in every],
            mode="markers",
            name="trained candidates",
            marker={"color": "lightgrey", "size": 7},
            text=[f"trial {e['trial']}: {e['knobs']}" for e in every],
            hoverinfo="text+x+y",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[e["latency_ms"][batch] for e in front],
            y=[e["val_score"] for e in front],
            mode="markers",
            name="front",
            marker={
                "size": 11,
                "color": [e["deflated_bytes"] / 1e3 for e in front],
                "colorscale": "Viridis",
                "colorbar": {"title": "kB (deflated)"},
                "showscale": bool(front),
            },
            text=[f"trial {e['trial']}: {e['knobs']}" for e in front],
            hoverinfo="text+x+y",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[original["latency_ms"][batch]],
            y=[original["val_score"]],
            mode="markers",
            name="original (fp32 winner)",
            marker={"symbol": "diamond", "size": 13, "color": "black"},
        )
    )
    chosen = [e for e in front if e["trial"] == pick]
    if chosen:
        figure.add_trace(
            go.Scatter(
                x=[chosen[0]["latency_ms"][batch]],
                y=[chosen[0]["val_score"]],
                mode="markers",
                name="pick",
                marker={"symbol": "star", "size": 18, "color": "crimson"},
            )
        )
    low = record["reference"]["value"] - record["allowed_drop"]
    if record.get("direction") == "minimize":
        low = record["reference"]["value"] + record["allowed_drop"]
    figure.add_hline(y=low, line_dash="dot", annotation_text="within --max-drop")
    figure.update_layout(
        xaxis_title=f"latency at batch {batch} (ms, {record.get('runtime')})",
        yaxis_title=f"validation {metric}",
    )
    return style(figure, height=420)


def macs_figure(record: Mapping[str, Any]) -> go.Figure | None:
    every = [e for e in record.get("all") or [] if e.get("macs")]
    if not every:
        return None
    batch = _batch(record)
    figure = go.Figure()
    for mode in sorted({_mode(e) for e in every}):
        group = [e for e in every if _mode(e) == mode]
        figure.add_trace(
            go.Scatter(
                x=[e["macs"] / 1e6 for e in group],
                y=[e["latency_ms"][batch] for e in group],
                mode="markers",
                name=mode,
                text=[f"trial {e['trial']}: {e['knobs']}" for e in group],
                hoverinfo="text+x+y",
            )
        )
    figure.update_layout(
        xaxis_title="multiply-adds per sample (millions)",
        yaxis_title=f"latency at batch {batch} (ms)",
    )
    return style(figure)


def _mode(entry: Mapping[str, Any]) -> str:
    quant = (entry.get("params") or {}).get("quant", "none")
    return "fp32" if quant == "none" else f"int8 {quant}"


def front_table(record: Mapping[str, Any]) -> str:
    batches = [str(b) for b in record["settings"]["batches"]]
    rows = []
    for name, entry in [
        ("original", record["original"]),
        *((f"trial {e['trial']}", e) for e in record["front"]),
    ]:
        mark = (
            " (pick)"
            if entry.get("trial") is not None and entry["trial"] == record["pick"].get("trial")
            else ""
        )
        rows.append(
            (
                name + mark,
                entry["val_score"],
                *(entry["latency_ms"][b] for b in batches),
                entry["bytes"] / 1e3,
                entry["deflated_bytes"] / 1e3,
                entry.get("parameters"),
                "fp32 winner" if entry.get("trial") is None else entry["knobs"],
            )
        )
    head = (
        "model",
        f"val {record['metric']}",
        *(f"ms @ {b}" for b in batches),
        "kB",
        "kB deflated",
        "parameters",
        "what",
    )
    return table(rows, head=head)


def pick_paragraph(record: Mapping[str, Any]) -> str:
    pick = record["pick"]
    counts = record["candidates"]
    text = (
        f"<p><strong>Pick</strong>: {html.escape(str(pick['reason']))}.</p>"
        f"<p>{counts['trained']} candidates trained; {counts['screened']} stopped by the latency / size "
        f"screen before any training ({counts['screened_share']:.0%}). Latency: median of timed runs on "
        f"{html.escape(str(record.get('runtime')))} with {record.get('threads')} thread(s), the front "
        "measured again beside the original. CPU: "
        f"{html.escape(str((record.get('cpu') or {}).get('cpu')))}, int8 dot-product instructions (VNNI): "
        f"{fmt((record.get('cpu') or {}).get('vnni'))}.</p>"
    )
    test = pick.get("test")
    if test:
        metric = record["metric"]
        text += (
            f"<p>Test {html.escape(metric)} (once, for the pick): {fmt(test.get(metric))} "
            f"(original {fmt(test.get('original'))}).</p>"
        )
    speedups = record.get("int8_vs_fp32") or []
    slow = [s for s in speedups if any(v < 1.0 for v in s["speedup"].values())]
    if slow:
        text += (
            f"<p>int8 did not pay everywhere here: {len(slow)} of {len(speedups)} int8 structures ran slower "
            "than the same structure in fp32 at some batch size; such a model is never chosen if it is "
            "slower than the original.</p>"
        )
    return text
