"""The MLP family: a plain ``nn.Sequential`` over the flattened sample."""

from __future__ import annotations

import math

from torch import nn

from tunelab.models._layers import block
from tunelab.models._specs import MLPSpec

__all__ = ["build_mlp"]


def build_mlp(spec: MLPSpec, *, input_shape: tuple[int, ...], output_dim: int) -> nn.Sequential:
    """``Flatten -> [Linear -> BatchNorm1d -> act -> Dropout] * len(hidden) -> Linear``, ``[N, *sample]`` in.

    Any input kind works: an image or a sequence is flattened to ``prod(input_shape)`` features.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    n_features = math.prod(input_shape)
    for width in spec.hidden:
        layers += block(
            nn.Linear(n_features, width),
            activation=spec.activation,
            batch_norm=spec.batch_norm,
            dropout=spec.dropout,
        )
        n_features = width
    layers.append(nn.Linear(n_features, output_dim))
    return nn.Sequential(*layers)
