"""Vectorized SGD, Adam, AdamW, RMSprop and Adagrad with per-member hyperparameters.

Each follows the update equations and defaults of its ``torch.optim`` namesake (the single-tensor path), with
every scalar hyperparameter replaced by a ``[K, 1]`` tensor; the tests check member-by-member equivalence.
Scalar factors (bias corrections, step sizes) are computed in float64 and cast once, as torch computes them in
Python floats. ``torch._foreach_*`` ops keep the Python overhead to a few calls per step for all parameters;
where torch has a fused single-pass kernel (SGD, Adam, AdamW, Adagrad), it is called once per member instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from tunelab.fused._optim_base import HyperparameterValue, Implementation, PopulationOptimizer

__all__ = ["PopAdagrad", "PopAdam", "PopAdamW", "PopRMSprop", "PopSGD"]


class PopSGD(PopulationOptimizer):
    """``torch.optim.SGD`` (dampening 0) per member: lr, momentum, weight_decay; ``nesterov`` for all members.

    ``g = grad + wd * p``; ``buf = momentum * buf + g`` (the first step gives ``buf = g``, as torch's clone);
    ``g = g + momentum * buf`` (Nesterov) or ``buf``; ``p -= lr * g``.
    """

    defaults: ClassVar[dict[str, float]] = {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0}
    state_names: ClassVar[dict[str, str | None]] = {"momentum_buffer": None}
    fused_kernel = "_fused_sgd_"

    def __init__(
        self,
        params: Iterable[Tensor],
        *,
        n_members: int,
        nesterov: bool = False,
        implementation: Implementation = "auto",
        **hparams: HyperparameterValue,
    ) -> None:
        super().__init__(params, n_members=n_members, implementation=implementation, **hparams)
        self.nesterov = nesterov

    def _fused_member_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        hparams: dict[str, float],
        step: Tensor,
    ) -> None:
        # Zero-initialised buffers make the first step buf = 0 * momentum + g = g, as torch's clone, so the
        # kernel never needs its is_first_step branch; with momentum 0 it takes no buffers, as torch does.
        momentum = hparams["momentum"]
        torch._fused_sgd_(
            params,
            grads,
            states["momentum_buffer"] if momentum != 0 else [],
            weight_decay=hparams["weight_decay"],
            momentum=momentum,
            lr=hparams["lr"],
            dampening=0.0,
            nesterov=self.nesterov,
            maximize=False,
            is_first_step=False,
        )

    def _update(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        *,
        lr: Tensor,
        step: Tensor,
    ) -> None:
        grads = self._with_l2(grads, params)
        if self.nesterov or self._flags.any("momentum", self.hparams["momentum"]):
            momentum = self._lists(self.hparams["momentum"], params)
            buffers = states["momentum_buffer"]
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            grads = list(torch._foreach_addcmul(grads, buffers, momentum)) if self.nesterov else buffers
        torch._foreach_addcmul_(params, grads, self._lists(-lr, params))


class PopAdam(PopulationOptimizer):
    """``torch.optim.Adam`` per member: lr, beta1, beta2, eps, weight_decay (L2, added to the gradient).

    ``m = lerp(m, g, 1 - beta1)``; ``v = beta2 * v + (1 - beta2) * g * g``; ``p -= lr / (1 - beta1**t) * m /
    (sqrt(v) / sqrt(1 - beta2**t) + eps)`` with t the member's own step.
    """

    defaults: ClassVar[dict[str, float]] = {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    state_names: ClassVar[dict[str, str | None]] = {"exp_avg": None, "exp_avg_sq": None}
    decoupled_weight_decay = False
    fused_kernel = "_fused_adam_"

    def _fused_member_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        hparams: dict[str, float],
        step: Tensor,
    ) -> None:
        kernel = torch._fused_adamw_ if self.decoupled_weight_decay else torch._fused_adam_
        kernel(
            params,
            grads,
            states["exp_avg"],
            states["exp_avg_sq"],
            [],
            [step] * len(params),
            lr=hparams["lr"],
            beta1=hparams["beta1"],
            beta2=hparams["beta2"],
            weight_decay=hparams["weight_decay"],
            eps=hparams["eps"],
            amsgrad=False,
            maximize=False,
        )

    def _update(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        *,
        lr: Tensor,
        step: Tensor,
    ) -> None:
        h = self.hparams
        if self.decoupled_weight_decay:
            if self._flags.any("weight_decay", h["weight_decay"]):
                torch._foreach_mul_(params, self._lists(1 - lr * h["weight_decay"], params))
        else:
            grads = self._with_l2(grads, params)
        exp_avg, exp_avg_sq = states["exp_avg"], states["exp_avg_sq"]
        torch._foreach_lerp_(exp_avg, grads, self._lists(1 - h["beta1"], params))
        torch._foreach_mul_(exp_avg_sq, self._lists(h["beta2"], params))
        torch._foreach_addcmul_(
            exp_avg_sq, torch._foreach_mul(grads, self._lists(1 - h["beta2"], params)), grads
        )
        step_size = lr / (1 - h["beta1"] ** step)
        bias_correction2_sqrt = (1 - h["beta2"] ** step).sqrt()
        denom = list(torch._foreach_sqrt(exp_avg_sq))
        torch._foreach_div_(denom, self._lists(bias_correction2_sqrt, params))
        torch._foreach_add_(denom, self._lists(h["eps"], params))
        torch._foreach_addcmul_(params, torch._foreach_div(exp_avg, denom), self._lists(-step_size, params))


class PopAdamW(PopAdam):
    """``torch.optim.AdamW`` per member: decoupled weight decay ``p *= 1 - lr * wd`` (default 0.01)."""

    defaults: ClassVar[dict[str, float]] = {**PopAdam.defaults, "weight_decay": 1e-2}
    decoupled_weight_decay = True
    fused_kernel = "_fused_adamw_"


class PopRMSprop(PopulationOptimizer):
    """``torch.optim.RMSprop`` per member: lr, alpha, eps, weight_decay, momentum; ``centered`` for all
    members.

    ``v = alpha * v + (1 - alpha) * g * g``; ``avg = sqrt(v - mean_g**2 if centered else v) + eps``; ``buf =
    momentum * buf + g / avg``; ``p -= lr * buf`` (with momentum 0 this is ``p -= lr * g / avg``).
    """

    defaults: ClassVar[dict[str, float]] = {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
    }
    state_names: ClassVar[dict[str, str | None]] = {
        "square_avg": None,
        "grad_avg": None,
        "momentum_buffer": None,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        *,
        n_members: int,
        centered: bool = False,
        implementation: Implementation = "auto",
        **hparams: HyperparameterValue,
    ) -> None:
        super().__init__(params, n_members=n_members, implementation=implementation, **hparams)
        self.centered = centered

    def _update(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        *,
        lr: Tensor,
        step: Tensor,
    ) -> None:
        h = self.hparams
        grads = self._with_l2(grads, params)
        square_avg = states["square_avg"]
        torch._foreach_mul_(square_avg, self._lists(h["alpha"], params))
        torch._foreach_addcmul_(
            square_avg, torch._foreach_mul(grads, self._lists(1 - h["alpha"], params)), grads
        )
        if self.centered:
            grad_avg = states["grad_avg"]
            torch._foreach_lerp_(grad_avg, grads, self._lists(1 - h["alpha"], params))
            avg = list(torch._foreach_addcmul(square_avg, grad_avg, grad_avg, value=-1))
            torch._foreach_sqrt_(avg)
        else:
            avg = list(torch._foreach_sqrt(square_avg))
        torch._foreach_add_(avg, self._lists(h["eps"], params))
        if self._flags.any("momentum", h["momentum"]):
            buffers = states["momentum_buffer"]
            torch._foreach_mul_(buffers, self._lists(h["momentum"], params))
            torch._foreach_addcdiv_(buffers, grads, avg)
            torch._foreach_addcmul_(params, buffers, self._lists(-lr, params))
        else:
            torch._foreach_addcmul_(params, torch._foreach_div(grads, avg), self._lists(-lr, params))


class PopAdagrad(PopulationOptimizer):
    """``torch.optim.Adagrad`` per member: lr, lr_decay, weight_decay, initial_accumulator_value, eps.

    ``sum += g * g``; ``p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)``.
    """

    defaults: ClassVar[dict[str, float]] = {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
    }
    state_names: ClassVar[dict[str, str | None]] = {"sum": "initial_accumulator_value"}
    fused_kernel = "_fused_adagrad_"

    def _fused_member_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        hparams: dict[str, float],
        step: Tensor,
    ) -> None:
        torch._fused_adagrad_(
            params,
            grads,
            states["sum"],
            [step] * len(params),
            lr=hparams["lr"],
            lr_decay=hparams["lr_decay"],
            weight_decay=hparams["weight_decay"],
            eps=hparams["eps"],
            maximize=False,
        )

    def _update(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        *,
        lr: Tensor,
        step: Tensor,
    ) -> None:
        h = self.hparams
        grads = self._with_l2(grads, params)
        sums = states["sum"]
        torch._foreach_addcmul_(sums, grads, grads)
        std = list(torch._foreach_sqrt(sums))
        torch._foreach_add_(std, self._lists(h["eps"], params))
        clr = lr / (1 + (step - 1) * h["lr_decay"])
        torch._foreach_addcmul_(params, torch._foreach_div(grads, std), self._lists(-clr, params))
