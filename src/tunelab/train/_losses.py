"""Losses as per-sample vectors, and the model output size each loss expects.

A loss function here maps ``(output, target)`` to a vector ``[N]``: the trainer reduces it to a mean in one
place (a fused population reduces it per member instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from tunelab.errors import SpecError

__all__ = [
    "DistillLossFunction",
    "LossFunction",
    "Task",
    "make_distill_loss",
    "make_loss",
    "output_dim_for",
    "resolve_loss",
]

Task = Literal["classification", "regression", "forecasting"]
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (output, target, teacher's output) -> [N]
DistillLossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

TASKS: tuple[str, ...] = ("classification", "regression", "forecasting")
_LOSSES_FOR = {
    "classification": ("cross_entropy", "bce"),
    "regression": ("mse", "mae", "huber"),
}

# torch's functional losses are untyped for mypy ("function"), hence Any.
_ELEMENTWISE_LOSSES: dict[str, Any] = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}


def _family(task: str) -> str:
    if task not in TASKS:
        raise SpecError(f"unknown task '{task}'; expected one of: {', '.join(TASKS)}")
    return "classification" if task == "classification" else "regression"


def resolve_loss(task: str, name: str) -> str:
    """The concrete loss for ``task``: ``auto`` is cross_entropy (classification) or mse (otherwise)."""
    family = _family(task)
    if name == "auto":
        return _LOSSES_FOR[family][0]
    if name not in _LOSSES_FOR[family]:
        raise SpecError(
            f"loss '{name}' does not fit a {task} task. "
            f"Valid losses for {task}: auto, {', '.join(_LOSSES_FOR[family])}"
        )
    return name


def make_loss(task: str, name: str = "auto", *, label_smoothing: float = 0.0) -> LossFunction:
    """The per-sample loss ``(output, target) -> [N]`` for ``task``.

    - cross_entropy: logits ``[N, C]``, class ids ``[N]``. With label smoothing ``eps`` the target puts
      ``1 - eps + eps/C`` on the true class and ``eps/C`` on the others:
      ``loss = (1 - eps) * -log p_y + eps * mean_c(-log p_c)``.
    - bce: binary classification with one logit ``[N, 1]`` (or ``[N]``) and ids in {0, 1}; smoothing makes the
      target ``y * (1 - eps) + eps / 2``, the two-class case of the rule above.
    - mse, mae, huber (delta 1): values ``[N, T]``; the per-sample loss is the mean over the T targets.
    """
    name = resolve_loss(task, name)
    if label_smoothing and name not in _LOSSES_FOR["classification"]:
        raise SpecError(
            f"label_smoothing={label_smoothing} applies to classification losses only, not '{name}'; "
            "set label_smoothing to 0"
        )
    if name == "cross_entropy":

        def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(output, target, reduction="none", label_smoothing=label_smoothing)

        return cross_entropy
    if name == "bce":

        def binary_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            soft = target.to(output.dtype) * (1.0 - label_smoothing) + label_smoothing / 2.0
            return F.binary_cross_entropy_with_logits(output.reshape(-1), soft, reduction="none")

        return binary_cross_entropy
    elementwise = _ELEMENTWISE_LOSSES[name]

    def regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_value = elementwise(output, target, reduction="none")
        return per_value.reshape(per_value.shape[0], -1).mean(dim=1)

    regression_loss.__name__ = name
    return regression_loss


def make_distill_loss(
    task: str,
    name: str = "auto",
    *,
    label_smoothing: float = 0.0,
    temperature: float,
    weight: float,
) -> DistillLossFunction:
    """The per-sample distillation loss ``(output, target, teacher) -> [N]``: ``(1 - weight) * hard + weight
    * soft``, where ``hard`` is :func:`make_loss`'s loss of ``output`` on ``target`` and ``teacher`` is the
    teacher's raw output, shaped as ``output`` is.

    - cross_entropy: ``soft = T^2 * KL(softmax(teacher / T) || softmax(output / T))`` over the classes.
    - bce: the same with one logit, i.e. the two-class distributions ``(1 - sigmoid(z / T), sigmoid(z / T))``.
    - mse, mae, huber: ``soft`` is the squared difference from ``teacher``, the mean over the T targets;
      ``temperature`` does not apply.

    The soft term is computed in float32 at least (also under amp). ``weight`` 0 is exactly the hard loss,
    1 the soft term alone.
    """
    name = resolve_loss(task, name)
    if not temperature > 0.0:
        raise SpecError(f"distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= weight <= 1.0:
        raise SpecError(f"distillation weight must be in [0, 1] (the soft term's share), got {weight}")
    hard_loss = make_loss(task, name, label_smoothing=label_smoothing)
    soft_loss = _soft_loss(name, temperature)

    def distill_loss(output: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if weight == 0.0:
            return hard_loss(output, target)
        soft = soft_loss(_at_least_float32(output), _at_least_float32(teacher))
        if weight == 1.0:  # no use for the labels: spare the hard loss
            return soft
        return (1.0 - weight) * hard_loss(output, target) + weight * soft

    return distill_loss


def _at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """Half-precision values (amp) as float32: softmax ratios at a temperature need the range."""
    return values if values.dtype in (torch.float32, torch.float64) else values.float()


def _soft_loss(name: str, temperature: float) -> LossFunction:
    """The distillation term ``(student output, teacher output) -> [N]`` of loss ``name`` (resolved)."""
    scale = temperature * temperature
    if name == "cross_entropy":

        def softened_kl(output: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
            log_student = F.log_softmax(output / temperature, dim=1)
            log_teacher = F.log_softmax(teacher / temperature, dim=1)
            kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True)
            return scale * kl.reshape(kl.shape[0], -1).sum(dim=1)

        return softened_kl
    if name == "bce":

        def softened_binary_kl(output: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
            student, taught = output.reshape(-1) / temperature, teacher.reshape(-1) / temperature
            p = torch.sigmoid(taught)
            # p log(p / q) + (1 - p) log((1 - p) / (1 - q)), with logsigmoid for log q and log(1 - q)
            kl = p * (F.logsigmoid(taught) - F.logsigmoid(student)) + (1.0 - p) * (
                F.logsigmoid(-taught) - F.logsigmoid(-student)
            )
            return scale * kl

        return softened_binary_kl

    def squared_difference(output: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        per_value = F.mse_loss(output, teacher, reduction="none")
        return per_value.reshape(per_value.shape[0], -1).mean(dim=1)

    return squared_difference


def output_dim_for(
    task: str, n_classes: int | None = None, n_targets: int | None = None, loss: str = "auto"
) -> int:
    """How many outputs the model needs: ``n_classes`` logits (1 for binary bce), else ``n_targets``."""
    name = resolve_loss(task, loss)
    if task == "classification":
        if n_classes is None or n_classes < 2:
            raise SpecError(f"classification needs n_classes >= 2, got {n_classes}")
        if name == "bce":
            if n_classes != 2:
                raise SpecError(
                    f"loss 'bce' is for binary classification (one logit), but there are {n_classes} "
                    "classes; use loss 'cross_entropy' (or 'auto')"
                )
            return 1
        return n_classes
    if n_targets is None or n_targets < 1:
        raise SpecError(f"{task} needs n_targets >= 1, got {n_targets}")
    return n_targets
