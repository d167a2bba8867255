"""Checks of the tensors a trainer is given: made once, at its public boundary, with messages that say
what was found, what was expected and how to fix it."""

from __future__ import annotations

from typing import Any

import torch

from tunelab.errors import DataError, SpecError

__all__ = ["checked_labels", "checked_pair", "checked_target_scale", "checked_targets"]


def checked_pair(data: Any, part: str, *, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as ``(X, y)`` on ``device``: a pair of tensors with the same number of rows (at least one),
    ``X`` finite."""
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise DataError(f"{part} data must be a pair (X, y) of tensors, got {type(data).__name__}")
    X, y = data
    if not (isinstance(X, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise DataError(
            f"{part} X and y must be torch tensors, got {type(X).__name__} and {type(y).__name__}; "
            "convert with torch.as_tensor(...)"
        )
    if len(X) == 0 or len(X) != len(y):
        raise DataError(
            f"{part} X has {len(X)} rows and y has {len(y)}; expected the same number, at least 1"
        )
    X, y = X.to(device), y.to(device)
    if X.is_floating_point() and not _all_finite(X):
        raise DataError(f"{part} X holds NaN or infinite values; impute or drop them before training")
    return X, y


def checked_labels(y: torch.Tensor, part: str, *, n_classes: int | None) -> int:
    """The number of classes: ``n_classes``, or ``max(y) + 1`` (at least 2) when None; ``y`` must be int64
    class ids ``[N]`` below it."""
    if y.dtype != torch.int64 or y.ndim != 1:
        raise DataError(
            f"{part} y for classification must be int64 class ids of shape [N], got {y.dtype} "
            f"{list(y.shape)}; use y.long()"
        )
    low, high = int(y.min()), int(y.max())
    if n_classes is None:
        n_classes = max(high + 1, 2)
    if low < 0 or high >= n_classes:
        raise DataError(
            f"{part} y holds class ids from {low} to {high}, but there are {n_classes} classes; "
            f"expected ids in 0..{n_classes - 1}"
        )
    return n_classes


def checked_targets(y: torch.Tensor, part: str, *, task: str) -> torch.Tensor:
    """Regression or forecasting targets as floating point ``[N, T]``."""
    if not y.is_floating_point():
        raise DataError(f"{part} y for {task} must be floating point, got {y.dtype}; use y.float()")
    return y.unsqueeze(1) if y.ndim == 1 else y


def _all_finite(x: torch.Tensor) -> bool:
    """True when ``x`` holds no NaN or infinity. A NaN or infinity anywhere makes the sum non-finite, so
    the cheap sum decides almost always; only a non-finite sum (finite values can overflow) pays for the
    element-wise check, which would otherwise allocate a mask as large as ``x`` on every fit."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def checked_target_scale(
    scale: tuple[Any, Any] | None, *, task: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A regression target scale ``(mean, std)`` as tensors on ``device``; None stays None."""
    if scale is None:
        return None
    if task == "classification":
        raise SpecError("target_scale applies to regression targets; pass None for classification")
    mean, std = (torch.as_tensor(v, dtype=torch.float32, device=device) for v in scale)
    if not bool((std > 0).all()):
        raise SpecError(f"target_scale std must be > 0, got {std.tolist()}")
    return mean, std
