"""Parse the compact YAML form of a search space into nodes, with did-you-mean errors. No ``eval``."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from tunelab.errors import SpecError
from tunelab.search.space._nodes import Choice, Fixed, Float, Int, Node

__all__ = ["parse_nodes"]

_KINDS = ("float", "int", "choice", "fixed")
_MODIFIERS = ("when", "per_layer")
_OPTIONS = {"float": ("log", "step"), "int": ("log", "step"), "choice": (), "fixed": ()}
# Spellings other libraries use, mapped to ours: a typo gets difflib, a habit gets a direct answer.
_HABITS = {
    "categorical": "choice",
    "choices": "choice",
    "options": "choice",
    "uniform": "float",
    "loguniform": "float (with log: true)",
    "randint": "int",
    "integer": "int",
    "value": "fixed",
    "const": "fixed",
}
_EXAMPLES = (
    "{float: [1e-4, 3e-2], log: true}, {int: [16, 256], step: 16}, {choice: [adam, sgd]}, {fixed: {a: 1}}"
)


def _suggest_key(key: str, valid: tuple[str, ...]) -> str:
    if key in _HABITS:
        return f" Did you mean '{_HABITS[key]}'?"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _pair(value: Any, kind: str) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SpecError(f"'{kind}' takes a [low, high] pair, e.g. {{{kind}: [1, 10]}}; got {value!r}.")
    return value[0], value[1]


def _parse_node(raw: Any) -> Node:
    if not isinstance(raw, Mapping):
        return Fixed(raw)  # a plain scalar or list means "fixed"
    keys = [str(k) for k in raw]
    kinds = [k for k in keys if k in _KINDS]
    if len(kinds) > 1:
        raise SpecError(f"a node has one kind, but this one has {kinds}; keep one of them.")
    if not kinds:
        hints = "".join(_suggest_key(k, _KINDS) for k in keys if k not in _MODIFIERS)
        raise SpecError(
            f"a node needs one of the keys {', '.join(_KINDS)}, but has {keys}.{hints} "
            f"Examples: {_EXAMPLES}. To fix a mapping as a constant, write {{fixed: ...}}."
        )
    kind = kinds[0]
    valid = (kind, *_OPTIONS[kind], *_MODIFIERS)
    for key in keys:
        if key not in valid:
            raise SpecError(
                f"unknown key '{key}' in a {kind} node.{_suggest_key(key, valid)} "
                f"Valid keys: {', '.join(valid)}."
            )
    modifiers: dict[str, Any] = {"when": raw.get("when"), "per_layer": raw.get("per_layer")}
    options: dict[str, Any] = {k: raw[k] for k in _OPTIONS[kind] if k in raw}
    if "log" in options and not isinstance(options["log"], bool):
        raise SpecError(f"log must be true or false, got {options['log']!r}.")
    if kind == "float":
        low, high = _pair(raw["float"], "float")
        return Float(low, high, **options, **modifiers)
    if kind == "int":
        low, high = _pair(raw["int"], "int")
        return Int(low, high, **options, **modifiers)
    if kind == "choice":
        return Choice(raw["choice"], **modifiers)
    return Fixed(raw["fixed"], **modifiers)


def parse_nodes(mapping: Any) -> dict[str, Node]:
    """``{"train.lr": {"float": [1e-4, 1e-1], "log": True}, ...}`` → ``{"train.lr": Float(...), ...}``."""
    if not isinstance(mapping, Mapping):
        raise SpecError(
            f"a search space is a mapping from parameter paths to nodes, e.g. "
            f"{{train.lr: {{float: [1e-4, 3e-2], log: true}}}}; got {type(mapping).__name__}."
        )
    nodes: dict[str, Node] = {}
    for path, raw in mapping.items():
        try:
            nodes[str(path)] = _parse_node(raw)
        except SpecError as err:
            raise SpecError(f"search space parameter '{path}': {err}") from None
    return nodes
