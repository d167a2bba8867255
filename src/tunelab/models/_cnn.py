"""The CNN family: a plain ``nn.Sequential`` of convolution blocks and a dense head."""

from __future__ import annotations

from torch import nn

from tunelab.errors import SpecError
from tunelab.models._layers import ACTIVATION_MODULES, block
from tunelab.models._specs import CNNSpec

__all__ = ["build_cnn"]

_POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
# Activations f with f(0) = 0, f(s * x) = s * f(x) for s > 0 (so f commutes with dropout's scaled mask) and
# non-decreasing (so f commutes with max-pooling): the block computes the same function with f after the pool.
_POOL_COMMUTING = frozenset({"relu", "leaky_relu"})


def _activation_after_pool(modules: list[nn.Module]) -> list[nn.Module]:
    """``[conv, (bn), act, (dropout), pool]`` as ``[conv, (bn), (dropout), pool, act]``: the same function
    and gradients, with the activation (forward and backward) on a quarter of the values. The parameterised
    modules keep their positions, so state-dict keys do not change."""
    activation = next(m for m in modules if isinstance(m, tuple(ACTIVATION_MODULES.values())))
    return [m for m in modules if m is not activation] + [activation]


def build_cnn(spec: CNNSpec, *, input_shape: tuple[int, ...], output_dim: int) -> nn.Sequential:
    """Conv blocks, then ``Flatten`` (or ``AdaptiveAvgPool2d(1) -> Flatten``), dense blocks, a final Linear.

    Input ``[N, C, H, W]``. A conv block is ``Conv2d('same') -> BatchNorm2d -> act -> Dropout -> 2x2 pool``;
    pooling halves H and W (rounding down), so the image must stay at least 1x1 after the last block. With
    ReLU or LeakyReLU and max-pooling the block's modules run as ``Conv2d -> BatchNorm2d -> Dropout -> pool ->
    act``, the same function computed with the activation on a quarter of the values.
    """
    if len(input_shape) != 3:
        raise SpecError(
            f"a CNN needs image samples of shape (channels, height, width); the data's samples have shape "
            f"{input_shape}. Use type 'mlp' for tables or 'rnn' for sequences, or load the data as images."
        )
    n_channels, height, width = input_shape
    layers: list[nn.Module] = []
    for index, out_channels in enumerate(spec.channels):
        conv = nn.Conv2d(n_channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2)
        modules = block(conv, activation=spec.activation, batch_norm=spec.batch_norm, dropout=spec.dropout)
        if spec.pool != "none":
            if height < 2 or width < 2:
                raise SpecError(
                    f"the CNN's 2x2 pooling after conv block {index + 1} of {len(spec.channels)} would "
                    f"shrink the {height}x{width} feature map to nothing (input images are "
                    f"{input_shape[1]}x{input_shape[2]}). Use fewer conv blocks (channels), or pool: none."
                )
            modules.append(_POOLS[spec.pool](2))
            if spec.pool == "max" and spec.activation in _POOL_COMMUTING:
                modules = _activation_after_pool(modules)
            height, width = height // 2, width // 2
        layers += modules
        n_channels = out_channels
    if spec.global_pool:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        n_features = n_channels
    else:
        layers.append(nn.Flatten())
        n_features = n_channels * height * width
    for hidden in spec.dense:
        layers += block(
            nn.Linear(n_features, hidden),
            activation=spec.activation,
            batch_norm=spec.batch_norm,
            dropout=spec.dropout,
        )
        n_features = hidden
    layers.append(nn.Linear(n_features, output_dim))
    return nn.Sequential(*layers)
