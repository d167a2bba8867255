"""``SearchSpace``: named nodes, their dependencies, and sampling into a nested override dict."""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from tunelab.errors import SpecError
from tunelab.search.space._nodes import Choice, Fixed, Float, Int, Node

__all__ = ["SearchSpace", "nest"]

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 0.1, "model.hidden": 64}`` → ``{"train": {"lr": 0.1}, "model": {"hidden": 64}}``."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


class SearchSpace:
    """Named search-space nodes keyed by dotted paths into the experiment spec (``train.lr``).

    Build it from Python (plain values mean fixed)::

        SearchSpace({
            "train.lr": Float(1e-4, 3e-2, log=True),
            "train.optimizer": Choice(["adam", "sgd"]),
            "train.momentum": Float(0.5, 0.99, when={"train.optimizer": "sgd"}),
            "model.n_layers": Int(1, 3),
            "model.widths": Int(64, 512, log=True, per_layer="model.n_layers"),
            "train.epochs": 20,
        })

    or from the compact YAML form with :meth:`from_dict`. Everything is checked here, once.
    """

    def __init__(self, params: Mapping[str, Node | Any]) -> None:
        if not isinstance(params, Mapping):
            raise SpecError(
                f"a search space is a mapping from parameter paths to nodes, got {type(params).__name__}."
            )
        nodes: dict[str, Node] = {}
        for path, node in params.items():
            if not isinstance(path, str) or not _PATH.match(path):
                raise SpecError(
                    f"search space parameter name {path!r} is not a dotted path of identifiers; "
                    "write e.g. train.lr or model.hidden."
                )
            nodes[path] = node if isinstance(node, Node) else Fixed(node)
        self._nodes = nodes
        self._check_paths()
        self._check_references()
        self._order = self._topological_order()

    @classmethod
    def from_dict(cls, mapping: Any) -> SearchSpace:
        """Parse the compact YAML form (see :mod:`tunelab.search.space`)."""
        from tunelab.search.space._parse import parse_nodes

        return cls(parse_nodes(mapping))

    def to_dict(self) -> dict[str, Any]:
        """The compact YAML form; ``SearchSpace.from_dict(space.to_dict()) == space``."""
        return {path: node.to_dict() for path, node in self._nodes.items()}

    # -- container protocol -------------------------------------------------------------------------------

    def __getitem__(self, path: str) -> Node:
        return self._nodes[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()!r})"

    @property
    def is_conditional(self) -> bool:
        """Whether some parameter exists only in some trials (``when`` or ``per_layer``)."""
        return any(node.when or node.per_layer for node in self._nodes.values())

    # -- sampling -----------------------------------------------------------------------------------------

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter through ``trial`` and return the nested override dict."""
        return nest(self.sample_flat(trial))

    def sample_flat(self, trial: optuna.Trial) -> dict[str, Any]:
        """Like :meth:`sample`, keyed by dotted path; per-layer parameters are lists."""
        return self._resolve(lambda name, node: node.suggest(trial, name))

    def overrides_from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild the nested override dict from a trial's flat ``params`` (e.g. ``study.best_params``)."""

        def lookup(name: str, node: Node) -> Any:
            if isinstance(node, Fixed):
                return node.value
            if name not in params:
                raise SpecError(
                    f"the trial has no value for the active parameter '{name}'; it was made with a different "
                    f"search space (its parameters: {sorted(params)})."
                )
            return params[name]

        return nest(self._resolve(lookup))

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every Optuna parameter name this space can suggest, with its distribution (per-layer expanded)."""
        out: dict[str, BaseDistribution] = {}
        for path, node in self._nodes.items():
            dist = node.distribution()
            if dist is not None:
                for name in self._optuna_names(path):
                    out[name] = dist
        return out

    def check_params(self, params: Mapping[str, Any]) -> None:
        """``SpecError`` unless every entry of the flat ``params`` names a parameter this space suggests (by
        its Optuna name: ``model.hidden_0`` for a per-layer one) and holds a value that parameter can take."""
        names = self.distributions()
        for name, value in params.items():
            if name not in names:
                raise SpecError(
                    f"'{name}' is not a parameter this space searches; searched: {', '.join(sorted(names))}."
                )
            node = self._nodes.get(name) or self._nodes[name.rpartition("_")[0]]
            if not node.contains(value):
                raise SpecError(f"{value!r} is not a value '{name}' can take ({node.to_dict()}).")

    def grid(self) -> dict[str, list[Any]]:
        """Finite values of every suggested parameter, for ``optuna.samplers.GridSampler``."""
        out: dict[str, list[Any]] = {}
        for path, node in self._nodes.items():
            if isinstance(node, Fixed):
                continue
            try:
                values = node.grid_values()
            except SpecError as err:
                raise SpecError(f"search space parameter '{path}': {err}") from None
            for name in self._optuna_names(path):
                out[name] = values
        return out

    def _optuna_names(self, path: str) -> list[str]:
        """The names a node is suggested under: its path, or ``<path>_<i>`` for every possible layer."""
        node = self._nodes[path]
        if node.per_layer is None:
            return [path]
        depth = self._nodes.get(node.per_layer)
        n_max = depth.high if isinstance(depth, Int) else depth.value if isinstance(depth, Fixed) else 0
        return [f"{path}_{i}" for i in range(n_max if isinstance(n_max, int) else 0)]

    def _resolve(self, pick: Callable[[str, Node], Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for path in self._order:
            node = self._nodes[path]
            if not all(dep in values and values[dep] in allowed for dep, allowed in node.when.items()):
                continue
            if node.per_layer is None:
                values[path] = pick(path, node)
            elif node.per_layer in values:
                values[path] = [pick(f"{path}_{i}", node) for i in range(values[node.per_layer])]
        return values

    # -- validation ---------------------------------------------------------------------------------------

    def _check_paths(self) -> None:
        paths = sorted(self._nodes)
        for shorter, longer in itertools.pairwise(paths):
            if longer.startswith(shorter + "."):
                raise SpecError(
                    f"search space parameters '{shorter}' and '{longer}' overlap: the first would replace"
                    f" the whole section that the second sets a key in. Keep only one of them."
                )
        for path, node in self._nodes.items():
            if node.per_layer is None:
                continue
            for name in self._optuna_names(path):
                if name in self._nodes:
                    raise SpecError(
                        f"'{path}' is per_layer, so it suggests '{name}', also a parameter of its own; "
                        "rename one of them."
                    )

    def _unknown(self, path: str, field: str, name: str) -> SpecError:
        return SpecError(
            f"search space parameter '{path}': {field} refers to '{name}', which is not a parameter of this "
            f"space.{_did_you_mean(name, self._nodes)} Parameters: {', '.join(self._nodes)}."
        )

    def _check_references(self) -> None:
        for path, node in self._nodes.items():
            for dep, allowed in node.when.items():
                if dep not in self._nodes:
                    raise self._unknown(path, "'when'", dep)
                if dep == path:
                    raise SpecError(f"search space parameter '{path}' has a 'when' on itself; remove it.")
                target = self._nodes[dep]
                if isinstance(target, Float) or target.per_layer is not None:
                    raise SpecError(
                        f"search space parameter '{path}': 'when' can only test a choice, int or fixed "
                        f"parameter, but '{dep}' is a {'per-layer list' if target.per_layer else 'float'}."
                    )
                for value in allowed:
                    if not target.contains(value):
                        hint = ""
                        if isinstance(target, Choice) and isinstance(value, str):
                            hint = _did_you_mean(value, [c for c in target.choices if isinstance(c, str)])
                        raise SpecError(
                            f"search space parameter '{path}': when {{{dep}: {value!r}}} can never hold, "
                            f"because '{dep}' takes {target.to_dict()!r}.{hint}"
                        )
            if node.per_layer is not None:
                depth = self._nodes.get(node.per_layer)
                if depth is None:
                    raise self._unknown(path, "'per_layer'", node.per_layer)
                valid = (isinstance(depth, Int) and depth.low >= 0) or (
                    isinstance(depth, Fixed) and isinstance(depth.value, int) and depth.value >= 0
                )
                if not valid or depth.per_layer is not None:
                    raise SpecError(
                        f"search space parameter '{path}': per_layer must name a non-negative int parameter "
                        f"(the number of layers), but '{node.per_layer}' is {depth.to_dict()!r}."
                    )

    def _topological_order(self) -> list[str]:
        """Declaration order, changed only as needed to put every parameter after its dependencies."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(path: str, chain: list[str]) -> None:
            if state.get(path) == "done":
                return
            if state.get(path) == "visiting":
                cycle = " -> ".join([*chain[chain.index(path) :], path])
                raise SpecError(
                    f"search space parameters depend on each other in a cycle: {cycle}; break it."
                )
            state[path] = "visiting"
            node = self._nodes[path]
            for dep in [*node.when, *([node.per_layer] if node.per_layer else [])]:
                visit(dep, [*chain, path])
            state[path] = "done"
            order.append(path)

        for path in self._nodes:
            visit(path, [])
        return order
