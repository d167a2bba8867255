"""Structured slimming: a narrower model of one family, the kept units' weights copied from a trained one.

Slimming (not "pruning": a pruned trial is one the search stopped) removes whole hidden units: the rows of a
``Linear``, the output channels of a ``Conv2d``, the hidden units of an ``RNN`` / ``LSTM`` / ``GRU``. Each
hidden layer's units are ranked (``unit_scores``), the best ``ratio * width`` (``slim_width``) are kept in
their original order, a narrower spec (``slim_spec``) is built with ``tunelab.models.build_model`` and the
kept slices are copied into it (``slim_model``): the unit's weight row and bias, its BatchNorm's weight, bias
and running statistics, and the next layer's input columns that read it. The result is an ordinary dense
model of the family, smaller and faster everywhere, that trains, exports and quantizes like any other; it
usually needs a few epochs of fine-tuning to recover the accuracy the dropped units carried.

Only models built by tunelab from an ``mlp``, ``cnn`` or ``rnn`` spec can be slimmed (also inside a
``WindowedModel``): the spec says what every layer is. A user's own module, an ensemble or a custom spec is a
``SpecError``; unstructured sparsity and int8 quantization work on any module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.models import (
    AnyModelSpec,
    CNNSpec,
    Ensemble,
    EnsembleSpec,
    MLPSpec,
    RNNSpec,
    SequenceModel,
    WindowedModel,
    build_model,
    parse_model_spec,
)

__all__ = ["CRITERIA", "Criterion", "SlimmableSpec", "slim_model", "slim_spec", "slim_width", "unit_scores"]

Criterion = Literal["l1", "l2", "bn"]
CRITERIA: tuple[str, ...] = get_args(Criterion)

SlimmableSpec = MLPSpec | CNNSpec | RNNSpec
"""The spec types slimming knows: every layer of the model they build is known."""

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gate blocks stacked in an RNN layer's weight_ih / weight_hh rows
_BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_HOW_TO_FIX = (
    "Slimming rebuilds a narrower model from the spec, so it must know every layer: build the model with "
    "tunelab.models.build_model from an mlp, cnn or rnn spec (and pass that spec), slim an ensemble's "
    "members one by one, or compress your own module with unstructured sparsity or int8 quantization, which "
    "work on any nn.Module."
)


# ---------------------------------------------------------------------------------------------- the spec


def slim_width(width: int, ratio: float) -> int:
    """``width * ratio`` rounded half up (``0.5`` -> 1, ``89.6`` -> 90, ``22.5`` -> 23), at least 1.

    The product is first rounded to 9 decimals, so that ``45 * 0.7`` (31.499999999999996 in binary) counts
    as the 31.5 it is meant to be.
    """
    return max(1, math.floor(round(width * ratio, 9) + 0.5))


def slim_spec(spec: AnyModelSpec | Mapping[str, Any], ratio: float) -> SlimmableSpec:
    """The narrower spec: every hidden width times ``ratio`` in (0, 1], by ``slim_width`` (half up, >= 1).

    MLP: each of ``hidden``; CNN: each of ``channels`` and ``dense``; RNN: ``hidden_size`` (every layer and
    direction). Every other field, the input and output sizes the model is built for included, is kept.
    ``ratio=1.0`` returns an equal spec. A mapping is validated as a model spec first.
    """
    spec = _checked_spec(spec)
    ratio = _checked_ratio(ratio)
    if isinstance(spec, MLPSpec):
        update: dict[str, Any] = {"hidden": [slim_width(w, ratio) for w in spec.hidden]}
    elif isinstance(spec, CNNSpec):
        update = {
            "channels": [slim_width(w, ratio) for w in spec.channels],
            "dense": [slim_width(w, ratio) for w in spec.dense],
        }
    else:
        update = {"hidden_size": slim_width(spec.hidden_size, ratio)}
    return type(spec).model_validate({**spec.model_dump(), **update})


# ---------------------------------------------------------------------------------------------- ranking


def unit_scores(
    model: nn.Module, spec: AnyModelSpec | Mapping[str, Any], criterion: Criterion
) -> list[torch.Tensor]:
    """How much each hidden unit of ``model`` (built from ``spec``) matters: one float32 CPU vector per layer.

    Layers in forward order. MLP: one ``[width]`` vector per hidden ``Linear``; CNN: one ``[channels]`` per
    conv block, then one per dense hidden layer; RNN: one ``[hidden_size]`` per layer and direction
    (``l0``, ``l0_reverse``, ``l1``, ...). The output layer is never scored: its width is the output size.

    - ``"l1"`` / ``"l2"``: the L1 / L2 norm of the weights that produce the unit, without its bias (the bias
      is an offset, not a response to the input): a ``Linear`` row, a conv filter (all input channels and
      kernel positions), and for an RNN the unit's rows in every gate block of ``weight_ih`` and
      ``weight_hh`` together (an LSTM's ``j``, ``H + j``, ``2H + j``, ``3H + j``; a GRU's three).
    - ``"bn"``: ``|gamma|`` of the BatchNorm after the layer (network slimming, Liu et al. 2017); a
      ``SpecError`` for a model without batch norm (and for every RNN).
    """
    spec = _checked_spec(spec)
    if criterion not in CRITERIA:
        raise SpecError(
            f"criterion must be one of {', '.join(CRITERIA)} (how units are ranked); got {criterion!r}."
        )
    inner = _inner(model)
    if isinstance(spec, RNNSpec):
        if criterion == "bn":
            raise SpecError(
                "criterion 'bn' ranks units by their BatchNorm scale, but a recurrent model has no batch "
                "norm. Use criterion 'l1' or 'l2'."
            )
        if not isinstance(inner, SequenceModel):
            raise SpecError(
                f"an rnn spec builds a SequenceModel; got a {type(inner).__name__}. {_HOW_TO_FIX}"
            )
        return [_rnn_scores(inner.rnn, layer, suffix, criterion) for layer, suffix in _directions(inner.rnn)]
    if not isinstance(inner, nn.Sequential):
        raise SpecError(
            f"an {spec.type} spec builds an nn.Sequential; got a {type(inner).__name__}. {_HOW_TO_FIX}"
        )
    if criterion == "bn" and not spec.batch_norm:
        raise SpecError(
            "criterion 'bn' ranks units by the scale of the BatchNorm after each layer, but this "
            f"{spec.type} has batch_norm: false. Use criterion 'l1' or 'l2', or train with batch_norm: true."
        )
    modules = list(inner)
    scores = []
    for index, layer in _producers(modules)[:-1]:
        if criterion == "bn":
            scores.append(_cpu(_norm_after(modules, index).weight).abs())
        else:
            weight = _cpu(layer.weight)
            scores.append(_norm(weight.reshape(len(weight), -1), criterion))
    return scores


def _norm(rows: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-row L1 or L2 norm of ``rows [units, k]``."""
    return rows.abs().sum(dim=1) if criterion == "l1" else rows.pow(2).sum(dim=1).sqrt()


def _rnn_scores(rnn: nn.RNNBase, layer: int, suffix: str, criterion: str) -> torch.Tensor:
    size = rnn.hidden_size
    blocks = [
        getattr(rnn, f"{name}_l{layer}{suffix}").detach().float().cpu() for name in ("weight_ih", "weight_hh")
    ]
    # [G * H, k] -> [G, H, k] -> [H, G * k]: unit j's rows of every gate block, of both matrices, in one row
    per_unit = [w.reshape(-1, size, w.shape[1]).transpose(0, 1).reshape(size, -1) for w in blocks]
    return _norm(torch.cat(per_unit, dim=1), criterion)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the ``k`` highest scores, ascending (the kept units keep their order); ties go to the
    lower index."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


# ---------------------------------------------------------------------------------------------- slimming


def slim_model(
    model: nn.Module,
    spec: AnyModelSpec | Mapping[str, Any],
    ratio: float,
    *,
    criterion: Criterion = "l1",
    input_shape: tuple[int, ...],
    output_dim: int,
) -> tuple[SlimmableSpec, nn.Module]:
    """``(slim_spec(spec, ratio), the narrower model)`` holding ``model``'s best units' weights.

    ``model`` must be the module ``build_model(spec, input_shape=, output_dim=)`` built (then trained): the
    same layers with the same shapes, checked, else a ``SpecError``. Each hidden layer keeps the
    ``slim_width(width, ratio)`` units with the highest ``unit_scores`` (ties to the lower index) in their
    original order; the narrower model is built by ``build_model(new_spec, ..., seed=0)`` and gets the kept
    slices: the layer's weight rows (conv: output channels) and bias, its BatchNorm's weight, bias,
    running_mean and running_var, and the next layer's input columns (after the last conv block, the
    flattened features are channel-major blocks of H*W, one per channel; with ``global_pool`` one per
    channel). RNN layers are sliced per direction and gate block (an LSTM's unit ``j`` is rows ``j``,
    ``H + j``, ``2H + j``, ``3H + j`` of ``weight_ih``, ``weight_hh`` and both biases, and column ``j`` of
    ``weight_hh``); each direction keeps its own best units, and the next layer and the head read
    ``[forward H | backward H]`` of the kept ones.

    With ``ratio=1.0`` the new model computes what ``model`` computes. Otherwise it computes what ``model``
    computes with the dropped units' outputs set to zero (their outgoing weights zeroed): exactly so, as the
    units only ever reach the rest of the network through those columns. The new model comes back in eval
    mode, on the CPU, in float32; ``model`` is not changed.
    """
    spec = _checked_spec(spec)
    ratio = _checked_ratio(ratio)
    _check_model(model, spec, input_shape=input_shape, output_dim=output_dim)
    scores = unit_scores(model, spec, criterion)
    new_spec = slim_spec(spec, ratio)
    slim = build_model(new_spec, input_shape=input_shape, output_dim=output_dim, seed=0)
    old, new = _inner(model), _inner(slim)
    with torch.no_grad():
        if isinstance(old, SequenceModel) and isinstance(new, SequenceModel):
            keep = [_top(s, new.rnn.hidden_size) for s in scores]
            _copy_rnn(old, new, keep)
        else:
            _copy_sequential(list(old.children()), list(new.children()), scores)
    return new_spec, slim.eval()


def _copy_sequential(old: list[nn.Module], new: list[nn.Module], scores: list[torch.Tensor]) -> None:
    """Copy the kept slices of an MLP's or CNN's layers, module by module (the two lists align)."""
    producers, targets = _producers(old), dict(_producers(new))
    previous: nn.Linear | nn.Conv2d | None = None
    columns: torch.Tensor | None = None  # the input features the current layer reads; None: all of them
    for position, (index, source) in enumerate(producers):
        target = targets[index]
        rows = None if position == len(producers) - 1 else _top(scores[position], _units(target))
        if isinstance(source, nn.Linear) and isinstance(previous, nn.Conv2d) and columns is not None:
            # conv -> dense: the flattened features are channel-major, a block of H*W (1 with global_pool)
            # per channel of the last conv block
            block = source.in_features // previous.out_channels
            columns = (columns[:, None] * block + torch.arange(block)).reshape(-1)
        weight = _cpu(source.weight)
        if rows is not None:
            weight = weight[rows]
        if columns is not None:
            weight = weight[:, columns]
        target.weight.copy_(weight)
        if source.bias is not None and target.bias is not None:
            target.bias.copy_(_cpu(source.bias) if rows is None else _cpu(source.bias)[rows])
        norm, new_norm = _next(old, index), _next(new, index)
        if rows is not None and isinstance(norm, _NORMS) and isinstance(new_norm, _NORMS):
            _copy_norm(norm, new_norm, rows)
        previous, columns = source, rows


def _copy_norm(source: _BatchNorm, target: _BatchNorm, rows: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        value, into = getattr(source, name), getattr(target, name)
        if isinstance(value, torch.Tensor) and isinstance(into, torch.Tensor):
            into.copy_(_cpu(value)[rows])
    if source.num_batches_tracked is not None and target.num_batches_tracked is not None:
        target.num_batches_tracked.copy_(source.num_batches_tracked)


def _copy_rnn(old: SequenceModel, new: SequenceModel, keep: list[torch.Tensor]) -> None:
    """Copy the kept units of every layer and direction (``keep`` in ``_directions`` order), then the head."""
    size, gates = old.rnn.hidden_size, _GATES[_cell(old.rnn)]
    n_directions = 2 if old.rnn.bidirectional else 1
    columns: torch.Tensor | None = None  # the layer's input features it keeps; None: all (the data's)
    for layer in range(old.rnn.num_layers):
        kept = keep[layer * n_directions : (layer + 1) * n_directions]
        for suffix, units in zip(("", "_reverse"), kept, strict=False):
            # unit j's row in every gate block: j, H + j, 2H + j, ...
            rows = (torch.arange(gates)[:, None] * size + units).reshape(-1)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                value = getattr(old.rnn, f"{name}_l{layer}{suffix}", None)
                if value is None:
                    continue
                value = _cpu(value)[rows]
                if name == "weight_ih" and columns is not None:
                    value = value[:, columns]
                elif name == "weight_hh":
                    value = value[:, units]
                getattr(new.rnn, f"{name}_l{layer}{suffix}").copy_(value)
        # the next layer (and the head) reads [forward H | backward H]
        columns = torch.cat([units + direction * size for direction, units in enumerate(kept)])
    new.head.weight.copy_(_cpu(old.head.weight)[:, columns])
    if old.head.bias is not None:
        new.head.bias.copy_(_cpu(old.head.bias))
    if hasattr(new.rnn, "flatten_parameters"):
        new.rnn.flatten_parameters()


# ---------------------------------------------------------------------------------------------- checks


def _checked_spec(spec: Any) -> SlimmableSpec:
    if isinstance(spec, Mapping):
        spec = parse_model_spec(spec)
    if isinstance(spec, (MLPSpec, CNNSpec, RNNSpec)):
        return spec
    if isinstance(spec, EnsembleSpec):
        what = "an ensemble"
    else:
        kind = getattr(spec, "type", None)
        what = f"a {kind} model" if isinstance(kind, str) else f"a {type(spec).__name__}"
    raise SpecError(
        f"slimming needs a tunelab-built model (mlp, cnn, rnn); the spec describes {what}. {_HOW_TO_FIX}"
    )


def _checked_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise SpecError(
            "ratio must be a number in (0, 1], the fraction of each hidden layer's units kept; got "
            f"{ratio!r}. For example 0.5 halves every hidden width."
        )
    return float(ratio)


def _check_model(model: Any, spec: SlimmableSpec, *, input_shape: tuple[int, ...], output_dim: int) -> None:
    """A ``SpecError`` unless ``model`` has the layers and tensor shapes of the model ``spec`` builds."""
    if isinstance(model, Ensemble):
        raise SpecError(
            f"slimming needs a tunelab-built model (mlp, cnn, rnn); got an Ensemble. {_HOW_TO_FIX}"
        )
    if not isinstance(model, nn.Module):
        raise SpecError(
            "slimming needs a tunelab-built model (mlp, cnn, rnn), an nn.Module; got a "
            f"{type(model).__name__}. {_HOW_TO_FIX}"
        )
    template = build_model(spec, input_shape=input_shape, output_dim=output_dim, seed=0)
    problem = _difference(model, template)
    if problem is not None:
        raise SpecError(
            f"slimming needs a tunelab-built model (mlp, cnn, rnn), the one build_model makes from the spec "
            f"given (type {spec.type}, input_shape={tuple(input_shape)}, output_dim={output_dim}); this "
            f"{type(model).__name__} differs: {problem}. Pass the spec, input_shape and output_dim the model "
            f"was built from (an export's metadata holds them). {_HOW_TO_FIX}"
        )


def _difference(model: nn.Module, template: nn.Module) -> str | None:
    """The first way ``model`` differs from ``template`` in its modules' kinds or its tensors' shapes."""
    if (
        isinstance(template, WindowedModel)
        and isinstance(model, WindowedModel)
        and (model.lags, model.shift) != (template.lags, template.shift)
    ):
        return (
            f"it reads lags={model.lags}, shift={model.shift}; the spec says lags={template.lags}, "
            f"shift={template.shift}"
        )
    modules = [(name, type(m)) for name, m in model.named_modules()]
    expected = [(name, type(m)) for name, m in template.named_modules()]
    if modules != expected:
        for (name, kind), (want_name, want_kind) in zip(modules, expected, strict=False):
            if (name, kind) != (want_name, want_kind):
                return (
                    f"module {name or '(root)'!r} is a {kind.__name__}, expected {want_name or '(root)'!r}, "
                    f"a {want_kind.__name__}"
                )
        return f"it has {len(modules)} modules, expected {len(expected)}"
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    wanted = {key: tuple(value.shape) for key, value in template.state_dict().items()}
    for key, shape in wanted.items():
        if shapes.get(key) != shape:
            return f"{key} has shape {shapes.get(key)}, expected {shape}"
    extra = sorted(shapes.keys() - wanted.keys())
    return f"it holds {extra[0]}, which the spec's model has not" if extra else None


# ---------------------------------------------------------------------------------------------- helpers


def _inner(model: nn.Module) -> nn.Module:
    """The family's network: the module itself, or the one a ``WindowedModel`` wraps."""
    return model.inner if isinstance(model, WindowedModel) else model


def _producers(modules: list[nn.Module]) -> list[tuple[int, nn.Linear | nn.Conv2d]]:
    """The Linear / Conv2d layers of a Sequential with their positions; the last is the output layer."""
    return [(i, m) for i, m in enumerate(modules) if isinstance(m, (nn.Linear, nn.Conv2d))]


def _next(modules: list[nn.Module], index: int) -> nn.Module | None:
    return modules[index + 1] if index + 1 < len(modules) else None


def _norm_after(modules: list[nn.Module], index: int) -> _BatchNorm:
    following = _next(modules, index)
    if not isinstance(following, _NORMS):
        raise SpecError(
            f"criterion 'bn' needs a BatchNorm after every hidden layer, but layer {index} "
            f"({type(modules[index]).__name__}) has none. Use criterion 'l1' or 'l2'."
        )
    return following


def _units(layer: nn.Linear | nn.Conv2d) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _directions(rnn: nn.RNNBase) -> list[tuple[int, str]]:
    suffixes = ("", "_reverse") if rnn.bidirectional else ("",)
    return [(layer, suffix) for layer in range(rnn.num_layers) for suffix in suffixes]


def _cell(rnn: nn.RNNBase) -> str:
    return "lstm" if isinstance(rnn, nn.LSTM) else "gru" if isinstance(rnn, nn.GRU) else "rnn"


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A detached float32 CPU copy in the logical (contiguous) layout: channels-last weights too."""
    return tensor.detach().to("cpu", torch.float32).contiguous()
