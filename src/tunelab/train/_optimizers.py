"""Optimizers: `torch.optim`'s, configured from a `TrainSpec`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.train._spec import TrainSpec

__all__ = ["LBFGS_STEP", "make_optimizer", "penalized_parameters"]

LBFGS_STEP = 1.0  # L-BFGS's first trial step: its line search takes it from there


def penalized_parameters(params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into weights (matrices, kernels, embeddings: ``ndim >= 2``) and the rest.

    Weight decay and L1 apply to the weights only. Biases and normalization scales/shifts (``ndim < 2``)
    set offsets and scales rather than model capacity, and shrinking them toward zero only hurts (the
    convention of BERT, GPT-2 and nanoGPT).
    """
    weights: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    for param in params:
        if param.requires_grad:
            (weights if param.ndim >= 2 else others).append(param)
    return weights, others


def make_optimizer(params: Iterable[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """A `torch.optim` optimizer for ``spec.optimizer``; ``weight_decay`` on weights only (see
    :func:`penalized_parameters`).

    gd and sgd are plain SGD (gd differs only in its batch: all rows); momentum / nesterov are SGD with
    ``spec.momentum``; adam, rmsprop (torch's alpha=0.99) and adagrad add ``weight_decay * w`` to the gradient
    (L2), adamw decays the weights directly (decoupled). lbfgs is torch's L-BFGS with a strong-Wolfe line
    search from a first step of 1, whatever ``lr`` says (one parameter group: the trainer adds its weight
    decay to the loss). The trainer sets the rate per step from the schedule.
    """
    weights, others = penalized_parameters(params)
    # Without decay one group will do: each group costs the optimizer another pass per step.
    split = ((weights, spec.weight_decay), (others, 0.0)) if spec.weight_decay else ((weights + others, 0.0),)
    groups = [{"params": group, "weight_decay": decay} for group, decay in split if group]
    if not groups:
        raise SpecError(
            "the model has no trainable parameters (none with requires_grad=True); nothing to train"
        )
    name, lr = spec.optimizer, spec.lr
    if name == "lbfgs":
        return torch.optim.LBFGS(
            weights + others, lr=LBFGS_STEP, max_iter=20, history_size=20, line_search_fn="strong_wolfe"
        )
    if name in ("gd", "sgd", "momentum", "nesterov"):
        momentum = spec.momentum if name in ("momentum", "nesterov") else 0.0
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=spec.betas, eps=spec.eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=spec.betas, eps=spec.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, eps=spec.eps)
    return torch.optim.Adagrad(groups, lr=lr, eps=spec.eps)
