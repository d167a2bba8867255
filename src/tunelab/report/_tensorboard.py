"""TensorBoard event files: live per-epoch scalars of a training run, and a study's trials after the fact.

Both write through ``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard`` package (the
optional extra ``pip install 'tunelab[tensorboard]'``); it is imported only when logging is asked for.
Open the result with ``tensorboard --logdir LOG_DIR``.

Tags group the epoch logs of :class:`~tunelab.train.Callback` the way TensorBoard's panels read best:
``loss`` → ``train/loss``; ``val_<name>`` → ``val/<name>``; ``lr`` → ``train/lr``; ``epoch_seconds`` and
``samples_per_second`` → ``speed/...``; any other number ``<name>`` → ``train/<name>``. The step is the epoch
(counted from 1, continuing after a resume).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.errors import MissingExtraError
from tunelab.train import Callback

if TYPE_CHECKING:
    import optuna

__all__ = [
    "TensorBoardLogger",
    "require_tensorboard",
    "scalar_tag",
    "write_history_to_tensorboard",
    "write_run_to_tensorboard",
    "write_study_to_tensorboard",
]

_SPEED_KEYS = ("epoch_seconds", "samples_per_second")


def require_tensorboard() -> Any:
    """``SummaryWriter``, or :class:`MissingExtraError` naming the extra when TensorBoard is absent (call it
    first to fail before a long run rather than after)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError itself when the tensorboard package is missing
        raise MissingExtraError("TensorBoard logging", "tensorboard") from None
    return SummaryWriter


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of an epoch-log key (module docstring): ``val_accuracy`` → ``val/accuracy``."""
    if key.startswith("val_"):
        return "val/" + key.removeprefix("val_")
    if key in _SPEED_KEYS:
        return "speed/" + key
    return "train/" + key


def _numeric(value: Any) -> bool:
    # bools are ints to Python, but a flag is not a curve; NaN / inf would break TensorBoard's axis scaling.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardLogger(Callback):
    """Writes every epoch's numeric logs (loss, ``val_*`` metrics, lr, throughput) to ``log_dir``.

    The writer opens at ``on_train_begin`` and closes at ``on_train_end``, so one logger serves one fit; the
    event file is flushed after every epoch, so TensorBoard shows a run while it trains. Raises
    :class:`~tunelab.errors.MissingExtraError` at construction when TensorBoard is not installed, before any
    training starts.

    >>> Trainer(model, spec, callbacks=[TensorBoardLogger("runs/tb/digits")])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer_class = require_tensorboard()
        self._writer: Any = None

    def on_train_begin(self, logs: Mapping[str, Any]) -> None:
        self._writer = self._writer_class(log_dir=str(self.log_dir))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        if self._writer is None:  # called outside a fit (a user driving the hooks by hand)
            self.on_train_begin({})
        for key, value in logs.items():
            if _numeric(value):
                self._writer.add_scalar(scalar_tag(key), float(value), global_step=epoch)
        self._writer.flush()
        return None

    def on_train_end(self, logs: Mapping[str, Any]) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_study_to_tensorboard(
    study: optuna.Study, log_dir: str | Path, *, metric: str = "value"
) -> list[Path]:
    """One sub-directory per finished trial (``trial_0007``): its intermediate values per epoch under
    ``search/<metric>``, and its parameters and final value in TensorBoard's HParams table.

    Works from the storage alone, so it covers every way a study ran (sequential, fused populations, worker
    processes, resumed). Trials still running are left out; pruned and failed trials show NaN as their final
    value. Exporting again replaces the event files of an earlier export. Returns the directories written.
    """
    from optuna.trial import TrialState

    require_tensorboard()
    root = Path(log_dir)
    written: list[Path] = []
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for trial in study.get_trials(deepcopy=False, states=finished):
        trial_dir = root / f"trial_{trial.number:04d}"
        writer = _fresh_writer(trial_dir)
        try:
            for step, value in sorted(trial.intermediate_values.items()):
                if _numeric(value):
                    writer.add_scalar(f"search/{metric}", float(value), global_step=step)
            final = trial.value if trial.state == TrialState.COMPLETE else None
            hparams = {name: _hparam(value) for name, value in trial.params.items()}
            hparams["state"] = trial.state.name.lower()
            # run_name "." keeps the HParams record in the trial's own directory (torch would add a
            # timestamped sub-directory otherwise).
            writer.add_hparams(
                hparams,
                {f"hparam/{metric}": float(final) if final is not None and _numeric(final) else math.nan},
                run_name=".",
            )
        finally:
            writer.close()
        written.append(trial_dir)
    return written


def write_history_to_tensorboard(epochs: Sequence[Mapping[str, Any]], log_dir: str | Path) -> Path:
    """Epoch logs after the fact (``History.epochs``: one mapping per epoch with its ``epoch``), with the same
    tags :class:`TensorBoardLogger` writes live. Replaces the event files of an earlier export."""
    log_dir = Path(log_dir)
    writer = _fresh_writer(log_dir)
    try:
        for index, row in enumerate(epochs, start=1):
            step = int(row.get("epoch", index))
            for key, value in row.items():
                if key != "epoch" and _numeric(value):
                    writer.add_scalar(scalar_tag(key), float(value), global_step=step)
    finally:
        writer.close()
    return log_dir


def write_run_to_tensorboard(
    run_dir: str | Path, log_dir: str | Path, *, storage: str | None = None
) -> list[Path]:
    """A finished run directory as TensorBoard event files: for a ``tunelab tune`` run, one directory per
    trial (:func:`write_study_to_tensorboard`) and ``final/``, the refit's epochs; for a ``tunelab train``
    run, ``train/``, its epochs. Returns the directories written. ``storage``: the study's full URL when it
    is not the run's ``study.db`` (the summary keeps it with the password hidden)."""
    from tunelab.report._rundata import load_run, load_study

    require_tensorboard()
    run = load_run(run_dir)
    log_dir = Path(log_dir)
    written: list[Path] = []
    study = load_study(run, storage=storage)
    if study is not None:
        written += write_study_to_tensorboard(study, log_dir, metric=str(run.summary.get("metric", "value")))
    if run.epochs:
        final = log_dir / ("final" if run.kind == "tune" else "train")
        written.append(write_history_to_tensorboard(run.epochs, final))
    return written


def _fresh_writer(log_dir: Path) -> Any:
    """A ``SummaryWriter`` on ``log_dir`` after removing the event files of an earlier export there, which
    TensorBoard would otherwise show as a second copy of every point."""
    writer_class = require_tensorboard()
    for stale in log_dir.glob("events.out.tfevents.*"):
        stale.unlink()
    return writer_class(log_dir=str(log_dir))


def _hparam(value: Any) -> bool | int | float | str:
    """TensorBoard's HParams accept numbers, strings and bools; anything else is shown as text."""
    return value if isinstance(value, bool | int | float | str) else str(value)
