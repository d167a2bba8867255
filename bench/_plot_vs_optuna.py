"""Draw ``vs_optuna.json`` as a PNG: each side's best-so-far validation accuracy over wall time.

Everything comes from the JSON (``curve``, ``search_end_s``, ``trial_log``), so a run can be plotted later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLORS = {"baseline": "tab:blue", "tunelab": "tab:orange"}
LABELS = {"baseline": "plain Optuna (TPE + Hyperband, 2 × 1 thread)", "tunelab": "tunelab"}


def plot_result(json_path: Path, png_path: Path | None = None) -> Path:
    """Write the plot next to ``json_path`` (same name, ``.png``) unless ``png_path`` is given; return it."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    result: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    budget = result["budget_s"]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for side in ("baseline", "tunelab"):
        record = result[side]
        curve = record["curve"]
        # Every finished trial as a faint dot (complete trials' values, pruned trials' last reported value).
        dots = [(r["end_s"], r["value"]) for r in record["trial_log"] if r["value"] is not None]
        if dots:
            ends, reached = zip(*dots, strict=True)
            axes.scatter(ends, reached, s=8, alpha=0.25, color=COLORS[side])
        if curve:
            times = [point[0] for point in curve] + [max(record["search_end_s"], curve[-1][0])]
            values = [point[1] for point in curve] + [curve[-1][1]]
            axes.step(times, values, where="post", marker=".", color=COLORS[side], label=LABELS[side])
    axes.axvline(budget, color="grey", linestyle="--", linewidth=0.8, label=f"budget ({budget:.0f} s)")
    axes.axvline(budget / 3, color="grey", linestyle=":", linewidth=0.8, label="a third of the budget")
    bests = [point[1] for side in ("baseline", "tunelab") for point in result[side]["curve"]]
    if bests:  # the band the curves live in, not the tail of poor pruned trials
        axes.set_ylim(max(bests) - 0.05, max(bests) + 0.01)
    axes.set_xlabel("wall time since the side started (s)")
    axes.set_ylabel("best validation accuracy so far")
    axes.set_title(f"Fashion-MNIST MLP: tunelab vs plain Optuna, {budget:.0f} s each")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out = png_path or json_path.with_suffix(".png")
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
