"""Training-curve plot of one run: loss, validation metrics and learning rate per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_training_curves"]


def plot_training_curves(
    epochs: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "", best_epoch: int | None = None
) -> Path:
    """Write a PNG with three panels (loss, validation metrics, learning rate) from per-epoch logs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    xs = [int(row.get("epoch", i + 1)) for i, row in enumerate(epochs)]
    metric_keys = sorted(
        {k for row in epochs for k in row if k.startswith("val_") and k != "val_loss" and _is_number(row[k])}
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    ax_loss, ax_metric, ax_lr = axes
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        ys = [row.get(key) for row in epochs]
        if any(_is_number(y) for y in ys):
            ax_loss.plot(xs, [y if _is_number(y) else float("nan") for y in ys], marker=".", label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend(loc="best")
    for key in metric_keys:
        ax_metric.plot(xs, [row.get(key, float("nan")) for row in epochs], marker=".", label=key[4:])
    ax_metric.set(title="validation metrics", xlabel="epoch")
    if metric_keys:
        ax_metric.legend(loc="best")
    lrs = [row.get("lr", float("nan")) for row in epochs]
    ax_lr.plot(xs, lrs, marker=".")
    ax_lr.set(title="learning rate", xlabel="epoch")
    if any(_is_number(v) and v > 0 for v in lrs):
        ax_lr.set_yscale("log")
    if best_epoch is not None:
        for ax in axes[:2]:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and value == value
