"""Population-based training (Jaderberg et al., 2017): the bottom copies the top, then explores."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from tunelab.errors import SpecError
from tunelab.search.schedulers._base import (
    BaseScheduler,
    Decision,
    Direction,
    Exploit,
    SchedulerDecision,
    TrialStatus,
    check_positive_int,
)
from tunelab.search.space import Choice, Float, Int, Node, SearchSpace, nest

__all__ = ["PbtScheduler"]

_FACTORS = (0.8, 1.2)


def _get_path(nested: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = nested
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


class PbtScheduler(BaseScheduler):
    """PBT over the live trials (a population trained side by side).

    Every ``perturbation_interval`` epochs a trial is ranked by its latest value among the live trials that
    have reported. With ``n`` of them and ``q = min(ceil(n * quantile_fraction), n // 2)``, a trial in the
    bottom ``q`` gets :class:`Exploit`: copy a trial drawn uniformly from the top ``q``, with that trial's
    parameters explored:

    - float/int: with probability ``resample_probability`` redrawn from the space, else times 0.8 or 1.2,
      then clipped to the bounds (and rounded to the step);
    - choice: with probability ``resample_probability`` redrawn, else kept.

    ``mutable``: the paths PBT may change; by default every float and choice parameter that no other parameter
    depends on and that is not per-layer (structure cannot change while weights are copied). Seeded.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        perturbation_interval: int = 4,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        mutable: list[str] | None = None,
        seed: int = 0,
        direction: Direction = "minimize",
    ) -> None:
        super().__init__(direction=direction)
        self.perturbation_interval = check_positive_int(perturbation_interval, "perturbation_interval")
        if not 0 < quantile_fraction <= 0.5:
            raise SpecError(f"quantile_fraction must be in (0, 0.5], got {quantile_fraction!r}.")
        if not 0 <= resample_probability <= 1:
            raise SpecError(f"resample_probability must be in [0, 1], got {resample_probability!r}.")
        self.space = space
        self.quantile_fraction = quantile_fraction
        self.resample_probability = resample_probability
        self.mutable = self._default_mutable() if mutable is None else list(mutable)
        for path in self.mutable:
            if (
                path not in space
                or not isinstance(space[path], (Float, Int, Choice))
                or space[path].per_layer
            ):
                raise SpecError(
                    f"PBT cannot mutate '{path}': mutable parameters must be float, int or choice parameters "
                    f"(not per-layer) of the space. Candidates: {', '.join(self._default_mutable())}."
                )
        self._rng = random.Random(seed)
        self._params: dict[int, dict[str, Any]] = {}  # live trials: their current flat parameters
        self._scores: dict[int, float] = {}  # live trials: latest score

    def _default_mutable(self) -> list[str]:
        depended_on = {dep for path in self.space for dep in self.space[path].when}
        depended_on |= {self.space[p].per_layer or "" for p in self.space}
        return [
            path
            for path in self.space
            if isinstance(self.space[path], (Float, Choice))
            and not self.space[path].per_layer
            and path not in depended_on
        ]

    def on_trial_start(self, trial_id: int, params: Mapping[str, Any]) -> None:
        flat = {}
        for path in self.space:
            found, value = _get_path(params, path)
            if found:
                flat[path] = value
        self._params[trial_id] = flat

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        self._scores[trial_id] = self.score(value)
        if epoch % self.perturbation_interval:
            return Decision.CONTINUE
        ranked = sorted(self._scores, key=lambda t: (self._scores[t], t))
        n_quantile = min(math.ceil(len(ranked) * self.quantile_fraction), len(ranked) // 2)
        if n_quantile == 0 or trial_id not in ranked[-n_quantile:]:
            return Decision.CONTINUE
        source = self._rng.choice(ranked[:n_quantile])
        new_params = self.explore(self._params.get(source, {}))
        self._params[trial_id] = new_params
        del self._scores[trial_id]  # not ranked again until it reports with its new weights
        return Exploit(source_trial_id=source, new_params=nest(new_params))

    def on_trial_end(self, trial_id: int, status: TrialStatus) -> None:
        self._params.pop(trial_id, None)
        self._scores.pop(trial_id, None)

    def explore(self, flat_params: Mapping[str, Any]) -> dict[str, Any]:
        """A perturbed copy of ``flat_params`` (dotted path → value); paths outside ``mutable`` are kept."""
        out = dict(flat_params)
        for path in self.mutable:
            if path in out:
                out[path] = self._perturb(self.space[path], out[path])
        return out

    def _perturb(self, node: Node, value: Any) -> Any:
        resample = self._rng.random() < self.resample_probability
        if isinstance(node, Choice):
            return self._rng.choice(list(node.choices)) if resample else value
        if not isinstance(node, (Float, Int)):  # unreachable: `mutable` is checked in __init__
            return value
        if resample:
            if node.log:
                new = math.exp(self._rng.uniform(math.log(node.low), math.log(node.high)))
            else:
                new = self._rng.uniform(node.low, node.high)
        else:
            new = value * self._rng.choice(_FACTORS)
        new = min(max(new, node.low), node.high)
        step = node.step if node.step is not None else (1 if isinstance(node, Int) else None)
        if step is not None:
            new = node.low + round((new - node.low) / step) * step
            new = min(max(new, node.low), node.high)
        return round(new) if isinstance(node, Int) else float(new)
