"""How to train: the validated `TrainSpec` and its parts (schedule, augmentation, early stopping).

Every field carries its constraint as data (``Field``/``Literal``), so impossible values are rejected once,
here, with pydantic's message naming the field, the bound and the value given.
"""

from __future__ import annotations

import difflib
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunelab.train._metrics import METRICS

__all__ = [
    "AugmentSpec",
    "DistillSpec",
    "EarlyStoppingSpec",
    "LossName",
    "OptimizerName",
    "ScheduleName",
    "ScheduleSpec",
    "TrainSpec",
]

OptimizerName = Literal["gd", "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lbfgs"]
FULL_BATCH_OPTIMIZERS = ("gd", "lbfgs")  # one step per epoch on all training rows
ScheduleName = Literal["constant", "step", "exponential", "cosine", "warmup", "onecycle", "plateau"]
LossName = Literal["auto", "cross_entropy", "bce", "mse", "mae", "huber"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class ScheduleSpec(BaseModel):
    """A learning-rate schedule; ``lr`` (of `TrainSpec`) is its base rate. Formulas: `tunelab.train.lr_at`.

    Granularity — per epoch: constant, step, exponential, plateau; per step: cosine, warmup, onecycle.
    """

    model_config = ConfigDict(extra="forbid")

    name: ScheduleName = "constant"
    # step: multiply by `gamma` every `step_size` epochs; exponential: multiply by `gamma` every epoch.
    step_size: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    # cosine / warmup: the floor the cosine decays to; plateau: the floor reductions stop at.
    min_lr: float = Field(default=0.0, ge=0.0)
    # warmup: linear warmup over this many epochs, then cosine decay to `min_lr` (0 = plain cosine).
    warmup_epochs: int = Field(default=1, ge=0)
    # onecycle: the peak rate (None = `lr`) and the fraction of steps spent rising to it.
    max_lr: float | None = Field(default=None, gt=0.0)
    pct_start: float = Field(default=0.3, gt=0.0, lt=1.0)
    # plateau: multiply by `factor` after more than `patience` epochs without a lower monitored loss.
    patience: int = Field(default=5, ge=0)
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)


class AugmentSpec(BaseModel):
    """Random augmentation of each training batch of images ``[N, C, H, W]``, from the trainer's generator."""

    model_config = ConfigDict(extra="forbid")

    hflip: bool = False  # mirror left-right with probability 1/2
    shift: int = Field(default=0, ge=0)  # translate by up to this many pixels each way, zero fill
    noise_std: float = Field(default=0.0, ge=0.0)  # add gaussian noise of this std (input units)


class EarlyStoppingSpec(BaseModel):
    """Stop after `patience` epochs in a row in which `monitor` did not improve by more than `min_delta`."""

    model_config = ConfigDict(extra="forbid")

    monitor: str = Field(default="val_loss", min_length=1)  # "loss", "val_loss" or "val_<metric>"
    mode: Literal["auto", "min", "max"] = "auto"  # auto: max for accuracy/f1/roc_auc/r2, else min
    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best: bool = True  # end training with the best epoch's weights


class DistillSpec(BaseModel):
    """Knowledge distillation: the student also learns from a teacher's outputs on the training rows.

    The per-sample loss is ``(1 - weight) * hard + weight * soft``. ``hard`` is the spec's own loss on the
    labels (label smoothing included); ``soft`` is, for classification, ``temperature**2 * KL(softmax(t / T)
    || softmax(s / T))`` of teacher logits ``t`` and student logits ``s`` (sigmoids for one bce logit;
    Hinton et al. 2015, where ``T**2`` keeps the gradient's scale as ``T`` changes), and for regression and
    forecasting the mean squared difference from the teacher's outputs in standardized units
    (``temperature`` does not apply). The teacher's outputs are computed once, by the caller, and given to
    `Trainer.fit` (``teacher=``).
    """

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=4.0, gt=0.0)  # softens both distributions; classification only
    weight: float = Field(default=0.5, ge=0.0, le=1.0)  # the distillation term's share of the loss


class TrainSpec(BaseModel):
    """How to train one model. Defaults are a sound starting point: Adam at 1e-3, batch 128."""

    model_config = ConfigDict(extra="forbid")

    # The fields members of one fused population may hold each their own values of (each is a [K] vector or
    # per-member state there); every other field is shared by the population. The one definition of that fact
    # for training settings (tunelab.execute derives the search's per-member paths from it).
    PER_MEMBER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "lr",
            "momentum",
            "betas",
            "eps",
            "weight_decay",
            "l1",
            "schedule",
            "label_smoothing",
            "grad_clip",
            "early_stopping",
        }
    )

    # gd: full-batch gradient descent (one step per epoch on all training rows); momentum / nesterov: SGD with
    # (Nesterov) momentum; rmsprop uses torch's alpha=0.99 and no momentum. lbfgs: full-batch L-BFGS with a
    # strong-Wolfe line search, one step of up to 20 iterations per epoch, so a convex model (the linear
    # model) trains to its optimum; it takes no lr or schedule (the line search sets each step's length), and
    # its weight_decay is the L2 penalty weight_decay / 2 * |w|^2 added to the loss.
    optimizer: OptimizerName = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # momentum / nesterov only
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)  # adam / adamw only
    eps: float = Field(default=1e-8, gt=0.0)
    # L2 penalty (decoupled for adamw); never applied to biases or normalization parameters.
    weight_decay: float = Field(default=0.0, ge=0.0)
    l1: float = Field(
        default=0.0, ge=0.0
    )  # adds l1 * sum|w| over weights (not biases/norm params) to the loss
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    loss: LossName = "auto"  # auto: cross_entropy for classification, mse for regression
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(default=None, gt=0.0)  # max total L2 norm of all gradients
    augment: AugmentSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    # Learn also from a teacher's outputs (Trainer.fit's teacher=); single models, never fused populations.
    distill: DistillSpec | None = None
    metrics: list[str] | None = None  # None: accuracy, f1 (classification); rmse, mae, r2 (regression)
    device: DeviceName = "auto"  # auto: cuda, else mps, else cpu
    amp: bool = False  # mixed precision (float16 autocast + gradient scaling), CUDA only
    # Fused populations on a GPU record their training step as a CUDA graph and replay it (same results,
    # without the launch overhead that bounds small models); false launches every kernel from Python.
    cuda_graphs: bool = True
    seed: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=1, ge=1)  # epochs between run_dir/checkpoint.pt writes

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        for name in names:
            if name not in METRICS:
                close = difflib.get_close_matches(name, list(METRICS), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown metric '{name}'.{hint} Valid metrics: {', '.join(METRICS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"metrics {names} name a metric twice; list each once")
        return names

    def rows_per_step(self, n_rows: int) -> int:
        """Rows in each optimizer step's minibatch for ``n_rows`` training rows: all of them for gd, lbfgs."""
        return n_rows if self.optimizer in FULL_BATCH_OPTIMIZERS else min(self.batch_size, n_rows)

    @model_validator(mode="after")
    def _schedule_fits_run(self) -> TrainSpec:
        schedule = self.schedule
        if schedule.name == "warmup" and schedule.warmup_epochs >= self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs ({schedule.warmup_epochs}) must be less than epochs ({self.epochs}) "
                "so that the warmup ends; lower warmup_epochs or train longer"
            )
        if self.optimizer == "lbfgs" and self.amp:
            raise ValueError(
                "optimizer lbfgs does not take amp (its line search needs exact losses); drop amp"
            )
        if self.distill is not None and self.augment is not None:
            raise ValueError(
                "distill does not combine with augment: the teacher's outputs are computed once, on the "
                "unaugmented training rows, so the student must see those same inputs. Drop augment (or "
                "distill)"
            )
        if schedule.name in ("cosine", "warmup", "plateau") and schedule.min_lr >= self.lr:
            raise ValueError(
                f"schedule.min_lr ({schedule.min_lr}) must be below lr ({self.lr}): it is the floor the "
                "rate decays to"
            )
        return self
