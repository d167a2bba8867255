"""One step of full-batch L-BFGS (``optimizer: lbfgs``): its line search evaluates the loss several times,
through a closure; weight decay and L1 are penalties on that loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tunelab.train._optimizers import penalized_parameters
from tunelab.train._spec import TrainSpec

__all__ = ["lbfgs_step"]


def lbfgs_step(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    spec: TrainSpec,
) -> torch.Tensor:
    """One step on all of ``inputs``; returns the data loss before it, as a minibatch step's loss is. The
    penalty is ``weight_decay / 2 * |w|^2 + l1 * |w|_1`` over the weights (not biases or normalization)."""
    weights = penalized_parameters(model.parameters())[0] if spec.weight_decay or spec.l1 else []
    losses: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets).mean()
        losses.append(loss.detach())
        if spec.weight_decay:
            loss = loss + 0.5 * spec.weight_decay * sum((w * w).sum() for w in weights)
        if spec.l1:
            loss = loss + spec.l1 * sum(w.abs().sum() for w in weights)
        loss.backward()
        if spec.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        return loss

    optimizer.step(closure)  # type: ignore[arg-type]  # LBFGS takes a tensor-valued closure
    return losses[0]
