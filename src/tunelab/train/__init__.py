"""The single-model training engine.

`TrainSpec` says how to train; `Trainer` runs one readable loop over tensors resident on the device:
batches are index slices of a per-epoch permutation drawn from the trainer's seeded generator, the loss is a
per-sample vector reduced to a mean in one place, metrics are computed once per epoch, and checkpoints hold
only tensors and plain values. Optimizers are `torch.optim`'s; schedules are closed-form functions of the
step (`lr_at`). With `DistillSpec`, a student also learns from a teacher's outputs given to `Trainer.fit`.
"""

from __future__ import annotations

from tunelab.train._augment import augment_images
from tunelab.train._batches import batch_bounds
from tunelab.train._callbacks import Callback, EarlyStopping, History
from tunelab.train._checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tunelab.train._device import denormals_flushed, flush_denormals, resolve_device
from tunelab.train._losses import Task, make_distill_loss, make_loss, output_dim_for, resolve_loss
from tunelab.train._memory import keep_freed_memory
from tunelab.train._metrics import compute_metrics, metric_from_row_means, metric_row_terms, resolve_metrics
from tunelab.train._monitor import MonitorState
from tunelab.train._optimizers import make_optimizer, penalized_parameters
from tunelab.train._schedules import PER_STEP_SCHEDULES, PlateauState, RunLength, lr_at, update_plateau
from tunelab.train._spec import AugmentSpec, DistillSpec, EarlyStoppingSpec, ScheduleSpec, TrainSpec
from tunelab.train._trainer import Trainer

__all__ = [
    "PER_STEP_SCHEDULES",
    "AugmentSpec",
    "Callback",
    "Checkpoint",
    "DistillSpec",
    "EarlyStopping",
    "EarlyStoppingSpec",
    "History",
    "MonitorState",
    "PlateauState",
    "RunLength",
    "ScheduleSpec",
    "Task",
    "TrainSpec",
    "Trainer",
    "augment_images",
    "batch_bounds",
    "compute_metrics",
    "denormals_flushed",
    "flush_denormals",
    "keep_freed_memory",
    "load_checkpoint",
    "lr_at",
    "make_distill_loss",
    "make_loss",
    "make_optimizer",
    "metric_from_row_means",
    "metric_row_terms",
    "output_dim_for",
    "penalized_parameters",
    "resolve_device",
    "resolve_loss",
    "resolve_metrics",
    "save_checkpoint",
    "update_plateau",
]


def __getattr__(name: str) -> object:
    # Deprecated names, kept for one release.
    if name == "Clock":
        import warnings

        warnings.warn(
            "tunelab.train.Clock is now tunelab.train.RunLength (tunelab.clock.Clock is the time source "
            "budgets read); the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return RunLength
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
