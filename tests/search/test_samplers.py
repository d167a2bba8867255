"""make_sampler: every sampler by name, seeded and reproducible; clear errors for impossible requests."""

from __future__ import annotations

import itertools

import optuna
import pytest

from tunelab.errors import SpecError
from tunelab.search import SAMPLER_NAMES, SearchSpace, make_sampler
from tunelab.search._bounded_tpe import DEFAULT_MAX_HISTORY, BoundedTPESampler

SPACE = SearchSpace.from_dict(
    {
        "x": {"float": [-2.0, 2.0], "step": 0.5},
        "n": {"int": [1, 3]},
        "c": {"choice": ["a", "b"]},
    }
)


def _first_suggestions(name: str, seed: int, n: int = 14, *, n_objectives: int = 1) -> list[dict]:
    sampler = make_sampler(name, seed=seed, space=SPACE, n_startup_trials=4, multi_objective=n_objectives > 1)
    study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)
    out = []
    for _ in range(n):
        trial = study.ask()
        params = SPACE.sample(trial)
        out.append(params)
        value = (params["x"] - 0.5) ** 2 + params["n"] + (params["c"] == "b")
        study.tell(trial, [value, -value][:n_objectives] if n_objectives > 1 else value)
    return out


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_same_seed_same_suggestions(name):
    n_objectives = 2 if name in ("nsga2", "motpe") else 1
    n = 6 if name == "gp" else 14  # 4 random then 2 GP fits: a GP fit costs seconds on 2 cores
    first = _first_suggestions(name, seed=3, n=n, n_objectives=n_objectives)
    assert _first_suggestions(name, seed=3, n=n, n_objectives=n_objectives) == first
    assert all(SPACE["x"].contains(p["x"]) and p["n"] in (1, 2, 3) for p in first)
    assert _first_suggestions(name, seed=4, n=n, n_objectives=n_objectives) != first


def test_grid_visits_every_point_once():
    # 9 values of x, 3 of n, 2 of c = 54 points; the 54th tell calls study.stop(), which only optimize()
    # allows
    # (run_study handles that), so ask 53 here: all distinct, all on the grid.
    keys = [(p["x"], p["n"], p["c"]) for p in _first_suggestions("grid", seed=0, n=53)]
    assert len(set(keys)) == 53
    assert set(keys) < set(itertools.product([i / 2 for i in range(-4, 5)], [1, 2, 3], "ab"))


def test_grid_needs_a_space_with_finite_values():
    with pytest.raises(SpecError, match="needs the search space"):
        make_sampler("grid", seed=0)
    with pytest.raises(SpecError, match="'lr': grid search needs finite choices"):
        make_sampler("grid", seed=0, space=SearchSpace.from_dict({"lr": {"float": [0.1, 1.0]}}))


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(
        SpecError, match=r"unknown sampler 'tpee'\. Did you mean 'tpe'\? Valid samplers: tpe, gp"
    ):
        make_sampler("tpee", seed=0)


def test_single_objective_sampler_refuses_several_objectives():
    with pytest.raises(SpecError, match=r"cmaes sampler optimizes one objective.*nsga2"):
        make_sampler("cmaes", seed=0, multi_objective=True)


def test_tpe_models_conditional_spaces_jointly():
    conditional = SearchSpace.from_dict(
        {"o": {"choice": ["a", "b"]}, "m": {"float": [0, 1], "when": {"o": "a"}}}
    )
    assert make_sampler("tpe", seed=0, space=conditional)._group is True
    assert make_sampler("tpe", seed=0, space=SPACE)._group is False
    assert make_sampler("tpe", seed=0, constant_liar=True)._constant_liar is True


@pytest.mark.parametrize("name", ["tpe", "motpe"])
def test_tpe_models_a_bounded_view_of_long_histories(name):
    sampler = make_sampler(name, seed=0, space=SPACE, multi_objective=name == "motpe")
    assert isinstance(sampler, BoundedTPESampler)
    assert sampler.max_history == DEFAULT_MAX_HISTORY
    # the model must start: the view is never smaller than the random start
    assert (
        make_sampler(name, seed=0, n_startup_trials=DEFAULT_MAX_HISTORY + 50).max_history
        == DEFAULT_MAX_HISTORY + 50
    )


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"seed": "1"}, "seed"), ({"seed": 0, "n_startup_trials": -1}, "n_startup")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        make_sampler("tpe", **kwargs)
