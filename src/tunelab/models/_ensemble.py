"""``Ensemble``: several trained models as one ``nn.Module`` whose output is their weighted average.

Classifiers are averaged as probabilities (soft voting), not as logits: the ensemble outputs the log of the
averaged probabilities, which a softmax maps back to that average, so everything downstream that reads logits
(losses, metrics, ``predict``) reads the ensemble as it reads one model. A one-logit binary classifier's
output is the logit of the averaged probability of class 1. Regression and forecasts average the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.errors import SpecError

__all__ = [
    "Combine",
    "Ensemble",
    "average_terms",
    "combine_outputs",
    "combine_rule",
    "member_terms",
    "terms_output",
]

Combine = Literal["softmax", "sigmoid", "mean"]
_COMBINES = ("softmax", "sigmoid", "mean")


def combine_rule(average: Literal["probabilities", "mean"], output_dim: int) -> Combine:
    """How an ensemble of models with ``output_dim`` outputs averages (``EnsembleSpec.combine``): class
    probabilities by softmax, or by sigmoid for one logit; or the outputs themselves."""
    if average == "mean":
        return "mean"
    return "sigmoid" if output_dim == 1 else "softmax"


def combine_outputs(outputs: torch.Tensor, weights: torch.Tensor, combine: str) -> torch.Tensor:
    """The weighted average of members' outputs ``[M, N, D]`` (``weights`` ``[M]``, summing to 1), as one
    model's outputs ``[N, D]``: log-probabilities for ``softmax``, a logit for ``sigmoid`` (D = 1), the
    mean for ``mean``. The one definition of how an ensemble combines, for its ``forward`` and for choosing
    its weights from stored outputs alike: members' terms, averaged, turned back into outputs."""
    return terms_output(average_terms(member_terms(outputs, combine), weights, combine), combine)


def member_terms(outputs: torch.Tensor, combine: str) -> torch.Tensor:
    """Members' outputs ``[M, N, D]`` in the space they are averaged in: log-probabilities (``softmax``);
    log p and log(1 - p) side by side (``sigmoid``, ``[M, N, 2]``); the outputs themselves (``mean``)."""
    if combine == "softmax":
        return F.log_softmax(outputs, dim=-1)
    if combine == "sigmoid":
        return torch.cat([F.logsigmoid(outputs), F.logsigmoid(-outputs)], dim=-1)
    return outputs


def average_terms(terms: torch.Tensor, weights: torch.Tensor, combine: str) -> torch.Tensor:
    """The weighted average ``[N, D']`` of members' terms ``[M, N, D']``: of the probabilities, in log space
    (a log-sum-exp, which stays finite where probabilities underflow), or of the outputs (``mean``)."""
    w = weights.to(terms.dtype).reshape(-1, 1, 1)
    if combine == "mean":
        return (terms * w).sum(dim=0)
    return torch.logsumexp(terms + torch.log(w), dim=0)


def terms_output(average: torch.Tensor, combine: str) -> torch.Tensor:
    """Averaged terms back as one model's outputs: the logit log p - log(1 - p) for ``sigmoid``."""
    return average[..., :1] - average[..., 1:] if combine == "sigmoid" else average


class Ensemble(nn.Module):
    """``members`` averaged with ``weights`` (normalized to sum to 1) as ``combine`` says (see
    :func:`combine_outputs`). The weights are a buffer outside the state dict: the spec holds them."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], *, combine: Combine) -> None:
        super().__init__()
        if not members or len(weights) != len(members):
            raise SpecError(
                f"an ensemble needs at least one member and one weight per member; got {len(members)} "
                f"members and {len(weights)} weights"
            )
        if combine not in _COMBINES:
            raise SpecError(f"combine must be one of {', '.join(_COMBINES)}; got {combine!r}")
        total = float(sum(weights))
        if not all(float(w) > 0 for w in weights) or not total < float("inf"):
            raise SpecError(f"ensemble weights must be positive and finite; got {list(weights)}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.weights: torch.Tensor  # a buffer (annotated here: TorchScript rejects a class-level annotation)
        self.register_buffer(
            "weights",
            torch.tensor([float(w) / total for w in weights], dtype=torch.float32),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for member in self.members:  # unrolled by TorchScript
            outputs.append(member(x))
        return combine_outputs(torch.stack(outputs), self.weights, self.combine)
