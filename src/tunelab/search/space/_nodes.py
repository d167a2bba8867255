"""The four kinds of search-space node: ``Float``, ``Int``, ``Choice`` and ``Fixed``.

Each node validates itself when built (one place for both the YAML and the Python route) and knows how to ask
an Optuna trial for a value, so Optuna's samplers see the real distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tunelab.errors import SpecError

__all__ = ["Choice", "Fixed", "Float", "Int", "Node"]

# Optuna stores categorical choices in its database; these are the types it can store.
_CHOICE_TYPES = (str, int, float, bool, type(None))


def _number(value: Any, what: str) -> float:
    """A finite float from a number or a numeric string.

    Numeric strings are accepted because PyYAML reads ``1e-4`` (no dot) as the string ``"1e-4"``.
    """
    if isinstance(value, bool):
        raise SpecError(f"{what} must be a number, but it is the boolean {value!r}.")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SpecError(f"{what} must be a number, but it is the string {value!r}.") from None
    if not isinstance(value, (int, float)):
        raise SpecError(f"{what} must be a number, but it is {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise SpecError(f"{what} must be finite, but it is {value!r}.")
    return float(value)


def _integer(value: Any, what: str) -> int:
    number = _number(value, what)
    if not number.is_integer():
        raise SpecError(
            f"{what} must be a whole number, but it is {value!r}. Use a float node for fractions."
        )
    return int(number)


def _normalize_when(when: Mapping[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    """``{param: value}`` or ``{param: [value, ...]}`` → ``{param: (value, ...)}`` (a list means "any of")."""
    if when is None:
        return {}
    if not isinstance(when, Mapping) or not when:
        raise SpecError(
            f"'when' must be a non-empty mapping from a parameter to its value(s), e.g. "
            f"when: {{train.optimizer: sgd}}; got {when!r}."
        )
    normalized: dict[str, tuple[Any, ...]] = {}
    for name, allowed in when.items():
        if not isinstance(name, str) or not name:
            raise SpecError(f"'when' keys must be parameter names, but {name!r} is not a string.")
        values = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not values:
            raise SpecError(f"'when: {{{name}: []}}' lists no value, so the parameter could never be active.")
        normalized[name] = values
    return normalized


@dataclass(frozen=True, kw_only=True)
class Node:
    """Common part of every node.

    ``when``: the node is active only if every named parameter has one of the given values (AND over keys,
    "any of" within a list). ``per_layer``: the name of an ``Int`` parameter ``n``; the node then yields a
    list of ``n`` values, suggested as ``<name>_0 .. <name>_{n-1}``.
    """

    when: Mapping[str, Any] = field(default_factory=dict)
    per_layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _normalize_when(self.when or None))
        if self.per_layer is not None and (not isinstance(self.per_layer, str) or not self.per_layer):
            raise SpecError(
                f"'per_layer' must name an int parameter (e.g. model.n_layers), got {self.per_layer!r}."
            )

    def distribution(self) -> BaseDistribution | None:
        """The Optuna distribution, or None for a fixed value."""
        raise NotImplementedError

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        raise NotImplementedError

    def grid_values(self) -> list[Any]:
        """Every value this node can take (for grid search)."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a value this node can take (used by ``when`` checks)."""
        raise NotImplementedError

    def _modifiers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.per_layer is not None:
            out["per_layer"] = self.per_layer
        if self.when:
            out["when"] = {k: (v[0] if len(v) == 1 else list(v)) for k, v in self.when.items()}
        return out

    def to_dict(self) -> Any:
        """The compact YAML form of this node (see :mod:`tunelab.search.space`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Float(Node):
    """A real number in ``[low, high]``; ``log`` samples uniformly in log space; ``step`` discretizes."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = _number(self.low, "low"), _number(self.high, "high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if low >= high:
            hint = "swap them" if low > high else "for a constant, write the plain value instead of a range"
            raise SpecError(f"float range [{low!r}, {high!r}]: low must be below high; {hint}.")
        if self.log and low <= 0:
            raise SpecError(
                f"float range [{low!r}, {high!r}] with log: true needs low > 0 (log {low!r} is undefined); "
                f"raise low (e.g. {high / 1000:g}) or drop log."
            )
        if self.step is not None:
            step = _number(self.step, "step")
            object.__setattr__(self, "step", step)
            if self.log:
                raise SpecError("a float node cannot have both log: true and a step; drop one of them.")
            if step <= 0:
                raise SpecError(f"step must be positive, got {step!r}.")
            # Decimal arithmetic on the numbers as written, as Optuna does: 0.1 divides [0, 1] exactly.
            width = Decimal(str(high)) - Decimal(str(low))
            if width % Decimal(str(step)):
                n_steps = float(width // Decimal(str(step)))
                raise SpecError(
                    f"step {step!r} does not divide the range [{low!r}, {high!r}] (width {high - low!r}); "
                    f"choose a step that does, or move high to {low + math.floor(n_steps) * step:.10g}."
                )

    def distribution(self) -> FloatDistribution:
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list[Any]:
        if self.step is None:
            raise SpecError(
                f"grid search needs finite choices, but the float range [{self.low!r}, {self.high!r}] has no "
                "step; give it one (e.g. step: 0.1), use a choice, or another sampler (tpe, random, qmc)."
            )
        # Decimal steps keep grid points free of float noise (0.30000000000000004): they read as written.
        low, step = Decimal(str(self.low)), Decimal(str(self.step))
        n_steps = int((Decimal(str(self.high)) - low) // step)
        return [float(low + i * step) for i in range(n_steps + 1)]

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"float": [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out | self._modifiers()


@dataclass(frozen=True)
class Int(Node):
    """A whole number in ``[low, high]`` (both included), every ``step`` from low; ``log``: in log space."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high, step = _integer(self.low, "low"), _integer(self.high, "high"), _integer(self.step, "step")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "step", step)
        if low >= high:
            hint = "swap them" if low > high else "for a constant, write the plain value instead of a range"
            raise SpecError(f"int range [{low}, {high}]: low must be below high; {hint}.")
        if step < 1:
            raise SpecError(f"step must be a positive whole number, got {step}.")
        if self.log and low < 1:
            raise SpecError(
                f"int range [{low}, {high}] with log: true needs low >= 1; raise low or drop log."
            )
        if self.log and step != 1:
            raise SpecError(
                "an int node cannot have both log: true and a step other than 1; drop one of them."
            )
        if (high - low) % step:
            raise SpecError(
                f"step {step} does not divide the range [{low}, {high}] (width {high - low}); "
                f"choose a step that does, or move high to {low + (high - low) // step * step}."
            )

    def distribution(self) -> IntDistribution:
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list[Any]:
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"int": [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step != 1:
            out["step"] = self.step
        return out | self._modifiers()


@dataclass(frozen=True)
class Choice(Node):
    """One of a finite list of values (strings, numbers, booleans or null)."""

    choices: Sequence[Any]

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise SpecError(f"choices must be a list, e.g. {{choice: [adam, sgd]}}; got {self.choices!r}.")
        choices = tuple(self.choices)
        if not choices:
            raise SpecError("choice has an empty list; give at least two values, or write a fixed value.")
        for value in choices:
            if not isinstance(value, _CHOICE_TYPES):
                raise SpecError(
                    f"choice value {value!r} is a {type(value).__name__}; choices must be strings, numbers, "
                    "booleans or null. For per-layer lists use per_layer (see tunelab.search.space)."
                )
        # Compare by (type, value) so that 1, 1.0 and True stay distinct choices.
        keys = [(type(v), v) for v in choices]
        duplicates = sorted({repr(v) for (t, v), k in zip(keys, keys, strict=True) if keys.count(k) > 1})
        if duplicates:
            raise SpecError(f"choice lists {', '.join(duplicates)} more than once; list each value once.")
        object.__setattr__(self, "choices", choices)

    def distribution(self) -> CategoricalDistribution:
        return CategoricalDistribution(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)

    def grid_values(self) -> list[Any]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def to_dict(self) -> dict[str, Any]:
        return {"choice": list(self.choices)} | self._modifiers()


@dataclass(frozen=True)
class Fixed(Node):
    """A constant: not searched, but written into every trial's overrides (when active)."""

    value: Any

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.per_layer is not None:
            raise SpecError("a fixed value cannot be per_layer; write the list itself, e.g. [64, 64].")

    def distribution(self) -> None:
        return None

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def grid_values(self) -> list[Any]:
        return [self.value]

    def contains(self, value: Any) -> bool:
        return bool(type(value) is type(self.value) and value == self.value)

    def to_dict(self) -> Any:
        modifiers = self._modifiers()
        if not modifiers and not isinstance(self.value, Mapping):
            return self.value
        return {"fixed": self.value} | modifiers
