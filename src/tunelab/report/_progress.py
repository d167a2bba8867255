"""Per-epoch console progress for `tunelab train` (rich), or JSON lines for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from tunelab.train import Callback

__all__ = ["EpochPrinter"]


class EpochPrinter(Callback):
    """Prints one line per epoch: losses, validation metrics, learning rate and throughput."""

    def __init__(self, *, n_epochs: int, console: Console | None = None, json_lines: bool = False) -> None:
        self.n_epochs = n_epochs
        self.console = console or Console(stderr=True)
        self.json_lines = json_lines

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        if self.json_lines:
            sys.stdout.write(json.dumps({"event": "epoch", "epoch": epoch, **_plain(logs)}) + "\n")
            sys.stdout.flush()
            return None
        parts = [f"epoch {epoch:>3}/{self.n_epochs}"]
        for key in ("loss", "val_loss"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        parts += [
            f"{k} {v:.4f}"
            for k, v in logs.items()
            if k.startswith("val_") and k != "val_loss" and isinstance(v, float)
        ]
        if "lr" in logs:
            parts.append(f"lr {logs['lr']:.2e}")
        if "samples_per_second" in logs:
            parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
        self.console.print("  ".join(parts), highlight=False)
        return None


def _plain(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in logs.items() if isinstance(v, int | float | str | bool) or v is None}
