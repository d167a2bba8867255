"""Unstructured sparsity: the smallest weights set to zero, at once or gradually while a model trains.

Magnitude sparsity zeroes individual weights (the ``|w|`` smallest, across the model or within each layer) and
keeps them zero. The tensors keep their shapes and dense kernels do the same work, so a sparse model is
neither smaller in memory nor faster: what shrinks is the *compressed* file (runs of zeros compress), and that
is the only gain to report. Structured slimming (``_slim``) is the way to a smaller, faster dense model.

``GradualSparsity`` follows Zhu & Gupta (2017), "To prune, or not to prune": the target sparsity rises along
a cubic from 0 to its final value, fast at first while the network can still recover, slowly at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.train import Callback

__all__ = [
    "SCOPES",
    "GradualSparsity",
    "Scope",
    "apply_masks",
    "cubic_sparsity",
    "magnitude_masks",
    "prunable_weights",
    "sparsity_of",
]

Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = get_args(Scope)

_WEIGHTED = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights sparsity applies to, as ``(name, parameter)`` in ``model.named_parameters()`` order.

    The ``weight`` of every ``Linear``, ``Bilinear``, ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` (the
    output layer too), and every ``weight_*`` matrix of an ``RNN`` / ``LSTM`` / ``GRU`` (``weight_ih_l<k>``,
    ``weight_hh_l<k>``, their ``_reverse`` twins, an LSTM's projection ``weight_hr_l<k>``). Not biases,
    normalization parameters (BatchNorm, LayerNorm), embeddings or parameters of other modules: they are few,
    or zeroing them is not what magnitude pruning means. A parameter shared by several modules is listed once,
    under the name ``named_parameters`` gives it; frozen parameters (``requires_grad=False``) are listed too.
    """
    modules = dict(model.named_modules())
    found = []
    for name, parameter in model.named_parameters():
        owner_name, _, local = name.rpartition(".")
        owner = modules.get(owner_name)
        if isinstance(parameter, nn.parameter.UninitializedParameter):
            continue
        if (isinstance(owner, _WEIGHTED) and local == "weight") or (
            isinstance(owner, nn.RNNBase) and local.startswith("weight_")
        ):
            found.append((name, parameter))
    return found


def magnitude_masks(
    model: nn.Module,
    sparsity: float,
    *,
    scope: Scope = "global",
    previous: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Boolean masks over ``prunable_weights(model)``, True where a weight is kept, keyed by parameter name.

    ``scope="global"``: one ranking of ``|w|`` across all those weights, so exactly
    ``round(sparsity * n)`` of the ``n`` weights are dropped, more in layers of small weights;
    ``scope="layer"``: each layer of ``n_l`` weights drops exactly ``round(sparsity * n_l)`` of its own. The
    smallest ``|w|`` go first; ties go in a fixed order (earlier layers, then lower flat indices, first), so
    the masks are a function of the weights alone. ``previous`` (masks from an earlier call): the weights
    they drop are dropped again, first, and a count below theirs rises to it, so masks only ever grow. Each
    mask has its weight's shape and device. ``model`` is not changed (``apply_masks`` does that).
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise SpecError(
            "sparsity must be a number in [0, 1), the fraction of the weights set to zero; got "
            f"{sparsity!r}. For example 0.9 keeps one weight in ten."
        )
    if scope not in SCOPES:
        raise SpecError(
            f"scope must be 'global' (one threshold across all layers) or 'layer' (each layer its own "
            f"sparsity); got {scope!r}."
        )
    weights = prunable_weights(model)
    if not weights:
        raise SpecError(
            f"the {type(model).__name__} has no weights sparsity applies to (those of Linear, Conv and "
            "RNN/LSTM/GRU layers); there is nothing to make sparse."
        )
    scores = [_scores(name, parameter, previous) for name, parameter in weights]
    if scope == "layer":
        dropped = [_lowest(score, sparsity) for score in scores]
    else:
        sizes = [score.numel() for score in scores]
        dropped = list(_lowest(torch.cat(scores), sparsity).split(sizes))
    return {
        name: (~drop).reshape(parameter.shape).to(parameter.device)
        for (name, parameter), drop in zip(weights, dropped, strict=True)
    }


def _scores(name: str, parameter: torch.Tensor, previous: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """``|w|`` flattened in logical order, float64 on the CPU; -1 where ``previous`` already dropped it."""
    score = parameter.detach().abs().to("cpu", torch.float64).reshape(-1)
    if previous is not None and name in previous:
        kept = _checked_mask(name, previous[name], parameter).to("cpu").reshape(-1)
        score = score.masked_fill(~kept, -1.0)
    return score


def _lowest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A flat bool tensor, True at the ``round(sparsity * n)`` lowest scores (at least every negative one)."""
    n_dropped = max(round(sparsity * scores.numel()), int((scores < 0).sum()))
    order = torch.sort(scores, stable=True).indices
    dropped = torch.zeros(scores.numel(), dtype=torch.bool)
    dropped[order[:n_dropped]] = True
    return dropped


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set the weights the masks drop (False) to zero, in place and without recording gradients.

    ``masks`` maps parameter names (``model.named_parameters()``) to bool tensors of the parameter's shape,
    as ``magnitude_masks`` returns; parameters without a mask are left alone. An unknown name or a wrong
    shape is a ``SpecError``.
    """
    parameters = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(parameters))
    if unknown:
        raise SpecError(
            f"masks name parameters the {type(model).__name__} does not have: {', '.join(unknown[:5])}. "
            "Compute the masks from this model (magnitude_masks(model, ...))."
        )
    with torch.no_grad():
        for name, mask in masks.items():
            parameter = parameters[name]
            parameter.masked_fill_(~_checked_mask(name, mask, parameter).to(parameter.device), 0.0)


def _checked_mask(name: str, mask: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != parameter.shape:
        got = f"a {mask.dtype} tensor of shape {list(mask.shape)}" if isinstance(mask, torch.Tensor) else mask
        raise SpecError(
            f"the mask for {name} must be a bool tensor of its shape {list(parameter.shape)}; got {got}. "
            "Compute the masks from this model (magnitude_masks(model, ...))."
        )
    return mask


def sparsity_of(model: nn.Module) -> float:
    """The fraction of exact zeros among ``prunable_weights(model)`` (0.0 when it has none)."""
    weights = [parameter for _, parameter in prunable_weights(model)]
    total = sum(p.numel() for p in weights)
    if total == 0:
        return 0.0
    zeros = sum(int((p.detach() == 0).sum()) for p in weights)
    return zeros / total


def cubic_sparsity(time: float, final_sparsity: float, *, start: float, end: float) -> float:
    """Zhu & Gupta's schedule: ``s_f * (1 - (1 - (t - start) / (end - start)) ** 3)`` clamped to [0, s_f].

    0 until ``start``, ``final_sparsity`` from ``end`` on (at once when ``end == start``), rising along a
    cubic in between, steepest at ``start``.
    """
    if time >= end:
        return final_sparsity
    if time <= start:
        return 0.0
    return final_sparsity * (1.0 - (1.0 - (time - start) / (end - start)) ** 3)


class GradualSparsity(Callback):
    """A ``Trainer`` callback that makes ``model`` sparse while it trains, along ``cubic_sparsity``.

    Time is counted in epochs: at the beginning of epoch ``e`` (1-based) the target is
    ``cubic_sparsity(e, final_sparsity, start=start_epoch, end=end_epoch)``, so training starts dense, the
    schedule begins at epoch ``start_epoch`` (its target is 0 there, as in the paper; the first weights go at
    the next update) and the epochs from ``end_epoch`` on train at ``final_sparsity``: ``end_epoch`` must not
    be after the fit's last epoch. ``updates_per_epoch`` > 1 also recomputes the masks within epochs, after
    evenly spaced steps, at the fractional time ``e + step / steps_per_epoch``. Each update ranks the current
    weights by magnitude (``magnitude_masks`` with ``scope``, the weights already dropped first: masks only
    grow) and zeroes the dropped ones; after every optimizer step (``on_batch_end``) the current masks are
    applied again, so the dropped weights stay zero whatever the optimizer's momentum does.

    Callbacks never get the trainer, so this one holds the model: pass it the module the ``Trainer`` trains.
    Limits: the full-batch L-BFGS optimizer runs no batch hooks (masks are then applied at epoch begin
    only); with early stopping's ``restore_best`` the restored weights carry the best epoch's (lower)
    sparsity. ``masks`` holds the current masks and ``sparsity`` the current target.
    """

    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        *,
        scope: Scope = "global",
        start_epoch: int = 1,
        end_epoch: int,
        updates_per_epoch: int = 1,
    ) -> None:
        if (
            isinstance(final_sparsity, bool)
            or not isinstance(final_sparsity, (int, float))
            or not 0.0 <= final_sparsity < 1.0
        ):
            raise SpecError(
                f"final_sparsity must be a number in [0, 1), the fraction of the weights zero at the end; "
                f"got {final_sparsity!r}."
            )
        if scope not in SCOPES:
            raise SpecError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}.")
        if not _is_int(start_epoch) or not _is_int(end_epoch) or not 1 <= start_epoch <= end_epoch:
            raise SpecError(
                f"need 1 <= start_epoch <= end_epoch (epochs count from 1); got start_epoch={start_epoch!r}, "
                f"end_epoch={end_epoch!r}. end_epoch is the first epoch trained at the final sparsity."
            )
        if not _is_int(updates_per_epoch) or updates_per_epoch < 1:
            raise SpecError(f"updates_per_epoch must be an int >= 1; got {updates_per_epoch!r}.")
        if not prunable_weights(model):
            raise SpecError(
                f"the {type(model).__name__} has no weights sparsity applies to (those of Linear, Conv and "
                "RNN/LSTM/GRU layers)."
            )
        self.model = model
        self.final_sparsity = float(final_sparsity)
        self.scope: Scope = scope
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.updates_per_epoch = updates_per_epoch
        self.sparsity = 0.0
        self.masks: dict[str, torch.Tensor] = {}
        self._dropped: list[tuple[nn.Parameter, torch.Tensor]] = []  # each masked weight, True where dropped
        self._update_steps: frozenset[int] = frozenset()
        self._steps_per_epoch = 1

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if logs["epochs"] < self.end_epoch:
            raise SpecError(
                f"GradualSparsity reaches its final sparsity at epoch {self.end_epoch}, but training runs "
                f"{logs['epochs']} epochs. Set end_epoch to at most {logs['epochs']}, or train longer."
            )
        steps = self._steps_per_epoch = int(logs["steps_per_epoch"])
        self._update_steps = frozenset(
            k * steps // self.updates_per_epoch for k in range(1, self.updates_per_epoch)
        ) - {0}

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self._update(float(epoch))

    def on_batch_end(self, epoch: int, step: int) -> bool | None:
        if step in self._update_steps:
            self._update(epoch + step / self._steps_per_epoch)
        else:
            self._apply()
        return None

    def _update(self, time: float) -> None:
        target = cubic_sparsity(time, self.final_sparsity, start=self.start_epoch, end=self.end_epoch)
        if target > self.sparsity:
            self.sparsity = target
            self.masks = magnitude_masks(self.model, target, scope=self.scope, previous=self.masks or None)
            parameters = dict(self.model.named_parameters())
            self._dropped = [(parameters[name], ~mask) for name, mask in self.masks.items()]
        self._apply()

    def _apply(self) -> None:
        """``apply_masks`` without its checks: this runs after every optimizer step."""
        with torch.no_grad():
            for parameter, dropped in self._dropped:
                parameter.masked_fill_(dropped, 0.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
