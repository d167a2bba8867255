"""Per-member losses, penalties and gradient clipping: nothing here couples two members."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["clip_grad_norm_per_member", "l1_penalty", "member_accuracy", "member_loss"]

Task = Literal["classification", "regression"]


def member_loss(
    output: Tensor, target: Tensor, *, task: Task = "classification", label_smoothing: Tensor | None = None
) -> Tensor:
    """Each member's mean loss over the minibatch: ``[K, N, ...]`` outputs, a shared target ``[N, ...]`` ->
    ``[K]``.

    Classification: cross-entropy on logits ``[K, N, C]`` with class ids ``[N]``, with per-member label
    smoothing ``label_smoothing`` (``[K]``; the formula of ``F.cross_entropy(label_smoothing=...)``: ``(1 - e)
    * nll + e * mean_c(-log p_c)``). Regression: mean squared error per member.
    """
    K = output.shape[0]
    if task == "regression":
        return (output - target.to(output.dtype)).square().reshape(K, -1).mean(dim=1)
    N, C = output.shape[1], output.shape[-1]
    # On a GPU the all-zero check would wait for the device (and cannot be recorded in a CUDA graph): there
    # the smoothing formula runs, which gives the same losses with e = 0.
    if label_smoothing is None or (label_smoothing.device.type == "cpu" and not bool(label_smoothing.any())):
        losses = F.cross_entropy(output.reshape(K * N, C), target.repeat(K), reduction="none")
        return losses.view(K, N).mean(dim=1)
    log_probs = F.log_softmax(output, dim=-1)
    nll = -log_probs.gather(-1, target.view(1, N, 1).expand(K, N, 1)).squeeze(-1)
    smooth = -log_probs.mean(dim=-1)
    eps = label_smoothing.to(output.dtype).view(K, 1)
    return ((1 - eps) * nll + eps * smooth).mean(dim=1)


@torch.no_grad()
def member_accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Accuracy of argmax predictions per member: logits ``[K, N, C]``, class ids ``[N]`` -> ``[K]``."""
    return (output.argmax(dim=-1) == target.unsqueeze(0)).to(torch.float64).mean(dim=1)


def l1_penalty(params: Iterable[Tensor], coefficient: Tensor) -> Tensor:
    """``coefficient[k] * sum |w|`` over member k's weights (``[K]``), to add to its loss.

    Weights are parameters with at least two dimensions per member (linear, convolution and recurrent weight
    matrices); biases and normalization parameters are exempt, as usual for L1 regularization.
    """
    total = None
    for p in params:
        if p.dim() >= 3:
            norms = p.abs().reshape(p.shape[0], -1).sum(dim=1)
            total = norms if total is None else total + norms
    if total is None:
        return torch.zeros_like(coefficient)
    return coefficient.to(total.dtype) * total


@torch.no_grad()
def clip_grad_norm_per_member(params: Iterable[Tensor], max_norm: Tensor) -> Tensor:
    """Clip each member's gradient to its own L2 norm ``max_norm[k]`` (``inf``: no clipping); the norms
    ``[K]``.

    The formula of ``torch.nn.utils.clip_grad_norm_`` member by member: ``g *= min(1, max_norm / (norm +
    1e-6))``. Never global: one member's large gradient does not shrink another's.
    """
    grads = [p.grad for p in params if p.grad is not None]
    K = max_norm.shape[0]
    if not grads:
        return torch.zeros(K, dtype=torch.float64, device=max_norm.device)
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(K, -1), dim=1) for g in grads], dim=1)
    norms = torch.linalg.vector_norm(per_param, dim=1)
    coefficient = (max_norm.to(norms.dtype) / (norms + 1e-6)).clamp(max=1.0)
    # A factor of exactly 1 leaves a gradient bit for bit as it is, so when no member is over its bound
    # (the usual case) the pass that would rewrite every gradient is skipped; NaN factors still multiply.
    # (On a GPU the check would wait for the device: there the multiply always runs.)
    if coefficient.device.type != "cpu" or bool((coefficient != 1.0).any()):
        torch._foreach_mul_(grads, [coefficient.view(-1, *([1] * (g.dim() - 1))) for g in grads])
    return norms
