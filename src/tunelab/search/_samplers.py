"""``make_sampler``: an Optuna sampler by name, seeded, with the settings tunelab considers best practice."""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning

from tunelab.errors import SpecError

if TYPE_CHECKING:
    from tunelab.search.space import SearchSpace

__all__ = ["SAMPLER_NAMES", "make_sampler"]

SAMPLER_NAMES = ("tpe", "gp", "cmaes", "random", "grid", "qmc", "nsga2", "motpe")
_SINGLE_OBJECTIVE_ONLY = ("cmaes",)


def make_sampler(
    name: str,
    *,
    seed: int,
    n_startup_trials: int | None = None,
    constant_liar: bool = False,
    space: SearchSpace | None = None,
    multi_objective: bool = False,
) -> optuna.samplers.BaseSampler:
    """An Optuna sampler, reproducible for a given ``seed``.

    - ``tpe`` (default): multivariate TPE; ``group=True`` when the space is conditional (or unknown), so
      parameters that appear together are modelled together. ``constant_liar`` when trials run in parallel:
      running trials count as bad results, so parallel workers do not all propose the same point. Past 100
      finished trials TPE models a bounded view of the history (the full history's good trials and the most
      recent others), so the cost of an ask stops growing with the length of the study
      (:class:`~tunelab.search._bounded_tpe.BoundedTPESampler`; ``bench/tpe_quality.py`` compares it with
      full-history TPE).
    - ``gp``: Gaussian-process Bayesian optimization (best for small budgets of continuous parameters).
    - ``cmaes``: CMA-ES (continuous parameters).
    - ``random``, ``qmc`` (scrambled Sobol), ``grid`` (needs ``space`` with finite values everywhere).
    - ``nsga2``, ``motpe``: for several objectives (``motpe`` is TPE, which handles several itself).

    Parameters a sampler cannot model jointly (categoricals for CMA-ES, conditional ones for GP/QMC) are drawn
    by its independent (random) sampler; that is expected here, so Optuna's warning about it is turned off.
    ``n_startup_trials``: random trials before the model takes over (None keeps Optuna's default).
    """
    if name not in SAMPLER_NAMES:
        close = difflib.get_close_matches(str(name), SAMPLER_NAMES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpecError(f"unknown sampler {name!r}.{hint} Valid samplers: {', '.join(SAMPLER_NAMES)}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed must be a whole number, got {seed!r}.")
    if n_startup_trials is not None and (not isinstance(n_startup_trials, int) or n_startup_trials < 0):
        raise SpecError(f"n_startup_trials must be a whole number >= 0, got {n_startup_trials!r}.")
    if multi_objective and name in _SINGLE_OBJECTIVE_ONLY:
        valid = ", ".join(n for n in SAMPLER_NAMES if n not in _SINGLE_OBJECTIVE_ONLY)
        raise SpecError(
            f"the {name} sampler optimizes one objective; for several objectives use one of: {valid}."
        )
    startup: dict[str, Any] = {} if n_startup_trials is None else {"n_startup_trials": n_startup_trials}

    # multivariate/group TPE and several samplers are marked experimental by Optuna; choosing them is
    # deliberate.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if name in ("tpe", "motpe"):
            # Imported here: it builds on Optuna's TPE internals, so an Optuna that moved them breaks TPE
            # (loudly) without breaking the other samplers.
            from tunelab.search._bounded_tpe import BoundedTPESampler

            return BoundedTPESampler(
                seed=seed,
                multivariate=True,
                group=space is None or space.is_conditional,
                constant_liar=constant_liar,
                **startup,
            )
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **startup)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            if space is None:
                raise SpecError(
                    "the grid sampler needs the search space: make_sampler('grid', space=..., seed=...)."
                )
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
        return optuna.samplers.NSGAIISampler(seed=seed)
