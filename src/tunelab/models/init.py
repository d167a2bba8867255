"""Weight-initialization schemes, drawn from an explicit ``torch.Generator``.

Every scheme treats ``gain`` as a multiplier on the weights' scale (standard deviation, uniform bound or
singular values), so ``gain=1`` gives the textbook formula:

=================  ===============================================================
``default``        PyTorch's own init of each layer, weights multiplied by ``gain``
``xavier_uniform`` U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))
``xavier_normal``  N(0, s²), s = gain * sqrt(2 / (fan_in + fan_out))
``he_uniform``     U(-b, b), b = gain * sqrt(6 / fan_in)          (alias ``kaiming_uniform``)
``he_normal``      N(0, s²), s = gain * sqrt(2 / fan_in)          (alias ``kaiming_normal``)
``orthogonal``     a (semi-)orthogonal matrix times ``gain``: W Wᵀ = gain² I when rows <= columns
=================  ===============================================================

Layers covered: ``nn.Linear``, ``nn.Conv1d/2d/3d`` (fan_in = in_channels x kernel area), ``nn.RNN/LSTM/GRU``.
Recurrent weights stack one matrix per gate (LSTM: 4, GRU: 3) along the first dimension; each gate's matrix
is initialized on its own, so Xavier sees the gate's true fan_out and "orthogonal" makes every ``[H, H]``
recurrent gate matrix orthogonal. Every scheme but ``default`` sets these layers' biases to zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.models._specs import INIT_SCHEMES, canonical_init_scheme

__all__ = ["INIT_SCHEMES", "init_weights"]

_FEED_FORWARD = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def init_weights(
    module: nn.Module, scheme: str, *, gain: float = 1.0, generator: torch.Generator
) -> nn.Module:
    """Re-initialize every covered layer in ``module`` in place, in ``module.modules()`` order; returns it.

    The same generator state gives the same weights; the global RNG is not used.
    """
    name = canonical_init_scheme(scheme)
    if name not in INIT_SCHEMES:
        raise SpecError(
            f"unknown init scheme {scheme!r}; expected one of {', '.join(INIT_SCHEMES)} "
            "(or the aliases kaiming_uniform, kaiming_normal)."
        )
    if not (math.isfinite(gain) and gain > 0):
        raise SpecError(f"init gain must be a finite number > 0; got {gain}.")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, _FEED_FORWARD):
                _init_matrix(layer.weight, name, gain, generator)
                if layer.bias is not None and name != "default":
                    layer.bias.zero_()
            elif isinstance(layer, nn.RNNBase):
                _init_recurrent(layer, name, gain, generator)
    return module


def _init_recurrent(layer: nn.RNNBase, scheme: str, gain: float, generator: torch.Generator) -> None:
    for param_name, param in layer.named_parameters(recurse=False):
        if param_name.startswith("weight_hr"):  # LSTM projection: one matrix, not per gate
            _init_matrix(param, scheme, gain, generator)
        elif param_name.startswith("weight"):
            for gate in param.chunk(_GATES[layer.mode], dim=0):
                _init_matrix(gate, scheme, gain, generator)
        elif scheme != "default":
            param.zero_()


def _init_matrix(weight: torch.Tensor, scheme: str, gain: float, generator: torch.Generator) -> None:
    if scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight, gain=gain, generator=generator)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight, gain=gain, generator=generator)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight, gain=gain, generator=generator)
    else:
        # nonlinearity="relu" is He's gain sqrt(2); kaiming_* take no free gain, so scale afterwards.
        if scheme == "he_uniform":
            nn.init.kaiming_uniform_(weight, nonlinearity="relu", generator=generator)
        elif scheme == "he_normal":
            nn.init.kaiming_normal_(weight, nonlinearity="relu", generator=generator)
        if gain != 1.0:
            weight.mul_(gain)
