"""``WindowedModel``: how an MLP or RNN reads forecasting windows (``lags``, ``normalize``)."""

from __future__ import annotations

import torch
from torch import nn

from tunelab.errors import SpecError

__all__ = ["WindowedModel", "window_input_shape"]


class WindowedModel(nn.Module):
    """``[N, L, F]`` -> the last ``lags`` steps -> (shifted by the last row) -> ``inner`` -> ``[N, out]``.

    With ``shift`` every feature of a window is taken relative to its last row, and the last value of feature
    0 (the series being forecast) is added back to every output: ``inner`` predicts changes, not levels. That
    needs the targets in the same units as feature 0, as ``tunelab.data`` scales forecasting targets; the
    network's output layer then starts at zero, so training starts from the naive forecast.
    """

    def __init__(self, inner: nn.Module, *, lags: int, shift: bool) -> None:
        super().__init__()
        self.inner = inner
        self.lags = lags
        self.shift = shift
        if shift:  # start from the naive forecast (the last value), as a residual block starts at identity
            last = [module for module in inner.modules() if isinstance(module, nn.Linear)][-1]
            with torch.no_grad():
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, -self.lags :]
        if not self.shift:
            return self.inner(x)
        last = x[:, -1:, :]
        return self.inner(x - last) + last[:, 0, :1]


def window_input_shape(input_shape: tuple[int, ...], lags: int | None, family: str) -> tuple[int, ...]:
    """The sample shape the inner network of a ``WindowedModel`` reads: ``(lags, F)``; checked."""
    if len(input_shape) != 2:
        raise SpecError(
            f"model.lags and model.normalize read forecasting windows of shape (length, features), but the "
            f"data's samples have shape {input_shape}. Remove them from the {family} model, or forecast a "
            "series (data.task: forecasting)."
        )
    length = input_shape[0]
    if lags is not None and lags > length:
        raise SpecError(
            f"model.lags is {lags}, but the data's windows hold {length} steps. Set data.window to at least "
            f"{lags}, or model.lags to at most {length}."
        )
    return (length if lags is None else lags, input_shape[1])
