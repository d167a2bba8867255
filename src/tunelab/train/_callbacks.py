"""Callbacks: the trainer's few hooks, and the built-in `EarlyStopping` and `History`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from tunelab.errors import SpecError
from tunelab.train._monitor import MonitorState, resolve_mode, update_monitor
from tunelab.train._spec import EarlyStoppingSpec

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

__all__ = ["Callback", "EarlyStopping", "History"]

Logs = dict[str, Any]


class Callback:
    """Base class for code that watches training, and may ask it to stop.

    Call order in ``Trainer.fit``: ``on_train_begin`` once; per epoch ``on_epoch_begin`` then
    ``on_epoch_end``, then ``on_checkpoint`` when the trainer has a run directory and wrote the epoch's
    ``checkpoint.pt``; ``on_train_end`` once (also after an early stop). ``epoch`` counts from 1. Epoch-end
    ``logs`` hold plain floats:
    ``loss`` (mean training loss over the epoch), ``val_loss`` and ``val_<metric>`` (with validation data),
    ``lr`` (the rate of the epoch's last step), ``epoch_seconds`` and ``samples_per_second`` (training only).
    Returning True from ``on_epoch_end`` asks the trainer to stop after this epoch (a search's pruner stops a
    trial this way: a decision returned, not an exception); every callback still sees that epoch.
    ``on_batch_end`` runs after every optimizer step, only for callbacks that define it; returning True ends
    training at once, mid-epoch (a hard time limit): that epoch is neither evaluated nor in the history
    (``History.interrupted_in`` names it), no checkpoint is written for it, and ``on_train_end`` gets the
    last completed epoch's logs. Callbacks get a snapshot of the logs, never the trainer.
    """

    def on_train_begin(self, logs: Logs) -> None:
        """``logs``: ``n_train``, ``n_val``, ``epochs``, ``steps_per_epoch``, ``initial_epoch`` (0, or the
        epochs done before a resume)."""

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        """Before epoch ``epoch``'s first step; ``logs`` holds ``lr``."""

    def on_batch_end(self, epoch: int, step: int) -> bool | None:
        """After step ``step`` (1-based within the epoch) of epoch ``epoch``; return True to end training
        now, without finishing the epoch."""
        return None

    def on_epoch_end(self, epoch: int, logs: Logs) -> bool | None:
        """After epoch ``epoch`` is trained and evaluated; return True to stop training."""
        return None

    def on_checkpoint(self, epoch: int, path: Path) -> None:
        """After ``path`` (the run directory's ``checkpoint.pt``) was written for epoch ``epoch``: e.g. to
        copy it where another machine can resume from it."""

    def on_train_end(self, logs: Logs) -> None:
        """After the last epoch; ``logs`` are the last epoch's."""


class EarlyStopping(Callback):
    """Asks to stop after ``patience`` consecutive epochs in which ``monitor`` did not improve by more than
    ``min_delta``; ``patience=None`` only tracks the best epoch. Its whole state is :attr:`state`."""

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        mode: Literal["auto", "min", "max"] = "auto",
        patience: int | None = 10,
        min_delta: float = 0.0,
    ) -> None:
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.state = MonitorState.initial(self.mode)

    @classmethod
    def from_spec(cls, spec: EarlyStoppingSpec) -> EarlyStopping:
        return cls(spec.monitor, mode=spec.mode, patience=spec.patience, min_delta=spec.min_delta)

    def on_epoch_end(self, epoch: int, logs: Logs) -> bool | None:
        if self.monitor not in logs:
            raise SpecError(
                f"early stopping monitors '{self.monitor}', which is not in the logs. "
                f"Available: {', '.join(sorted(logs))}"
            )
        self.state = update_monitor(
            self.state, logs[self.monitor], epoch=epoch, mode=self.mode, min_delta=self.min_delta
        )
        return self.patience is not None and self.state.n_bad_epochs >= self.patience


class History(Callback):
    """What happened in a fit: one logs dict per epoch (with its ``epoch``), the best epoch and whether
    training stopped before its last epoch. JSON-able through :meth:`to_dict`."""

    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor = monitor  # the quantity `best_epoch` refers to
        self.epochs: list[Logs] = []
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.interrupted_in: int | None = None  # the epoch an on_batch_end callback cut short

    def on_epoch_end(self, epoch: int, logs: Logs) -> bool | None:
        self.epochs.append({"epoch": epoch, **logs})
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "interrupted_in": self.interrupted_in,
            "epochs": [dict(row) for row in self.epochs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        history = cls(data["monitor"])
        history.epochs = [dict(row) for row in data["epochs"]]
        history.best_epoch = data["best_epoch"]
        history.stopped_early = data["stopped_early"]
        history.interrupted_in = data.get("interrupted_in")  # absent from histories saved before it existed
        return history

    def to_frame(self) -> pd.DataFrame:
        """One row per epoch, one column per logged quantity."""
        import pandas as pd

        return pd.DataFrame(self.epochs)

    def __repr__(self) -> str:
        return (
            f"History(n_epochs={len(self.epochs)}, best_epoch={self.best_epoch}, "
            f"stopped_early={self.stopped_early})"
        )
