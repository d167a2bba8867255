"""What two model specs must share to train together in one fused population; parameter counts."""

from __future__ import annotations

from typing import Any

from torch import nn

from tunelab.models._specs import CNNSpec, MLPSpec, ModelSpec, TextSpec

__all__ = ["count_parameters", "structure_signature"]


def structure_signature(spec: ModelSpec) -> tuple[tuple[str, Any], ...]:
    """A hashable ``((field, value), ...)`` of the spec's structural fields, sorted by field name.

    Specs with equal signatures build modules with the same layers and parameter shapes, in the same order,
    for the same data; they differ at most in dropout rate and weight init. MLP, CNN and text specs also
    record ``has_dropout``, since a ``Dropout`` module is present only for a rate above zero. A custom spec
    is all structure: its kwargs may set any layer's shape.
    """
    fields = spec.model_dump(exclude=set(spec.PER_MEMBER_FIELDS))
    if isinstance(spec, (MLPSpec, CNNSpec, TextSpec)):
        fields["has_dropout"] = spec.dropout > 0
    if isinstance(spec, MLPSpec) and not spec.hidden:
        # a linear model has no hidden block, so no activation, BatchNorm or Dropout module either
        for name in ("activation", "batch_norm", "has_dropout"):
            del fields[name]
    return tuple(sorted((name, _freeze(value)) for name, value in fields.items()))


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _freeze(value: Any) -> Any:
    """A hashable equivalent of a JSON-like value (lists to tuples, dicts to sorted item tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
