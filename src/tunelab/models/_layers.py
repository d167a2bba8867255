"""The building block the feed-forward families share: ``layer -> BatchNorm -> activation -> Dropout``.

Dropout is ``ByteDropout`` (``nn.Dropout`` with a mask drawn from random bytes: the same function, the rate
rounded to 1/256, several times faster on a CPU; see ``_dropout``)."""

from __future__ import annotations

from torch import nn

from tunelab.models._dropout import ByteDropout
from tunelab.models._specs import Activation

__all__ = ["ACTIVATION_MODULES", "block"]

# Default constructor arguments only (LeakyReLU slope 0.01, exact GELU), and never in place, so that the
# fused-population converter can map each module to its batched twin one to one.
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
}


def block(
    layer: nn.Linear | nn.Conv2d, *, activation: Activation, batch_norm: bool, dropout: float
) -> list[nn.Module]:
    """``[layer, BatchNorm (if asked), activation, Dropout (if dropout > 0)]``."""
    modules: list[nn.Module] = [layer]
    if batch_norm:
        if isinstance(layer, nn.Conv2d):
            modules.append(nn.BatchNorm2d(layer.out_channels))
        else:
            modules.append(nn.BatchNorm1d(layer.out_features))
    modules.append(ACTIVATION_MODULES[activation]())
    if dropout > 0:
        modules.append(ByteDropout(dropout))
    return modules
