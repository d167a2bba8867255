"""BoundedTPESampler: TPE sees a bounded view holding the best trials, proposals are reproducible and match
Optuna's TPE while the history is short, it still optimizes, and the multi-objective, constant-liar,
conditional and resume paths work."""

from __future__ import annotations

import copy
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_gamma, default_gamma_multiobjective, default_weights
from optuna.search_space import IntersectionSearchSpace
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace
from optuna.trial import FrozenTrial, TrialState

from tunelab.search import SearchSpace, _parzen, make_sampler, run_study
from tunelab.search._bounded_tpe import (
    DEFAULT_MAX_HISTORY,
    BoundedTPESampler,
    _IncrementalGroups,
    _IncrementalIntersection,
    good_group_size,
)
from tunelab.search._parzen import _FastParzenEstimator
from tunelab.search._tpe_history import _History, _NewTrials

PLANE = SearchSpace.from_dict(
    {"x": {"float": [-5.0, 5.0]}, "y": {"float": [-5.0, 5.0]}, "n": {"int": [-3, 3]}}
)


def _bowl(p: dict) -> float:
    return (p["x"] - 1.5) ** 2 + (p["y"] + 2.0) ** 2 + (p["n"] - 1) ** 2


@pytest.fixture
def views(monkeypatch):
    """What TPE modelled at each bounded ask: (good trials, other trials, the study's finished trials then).
    For Optuna's own split (several objectives), good is None and the others are the whole view."""
    seen: list[tuple[list[FrozenTrial] | None, list[FrozenTrial], list[FrozenTrial]]] = []
    split = _History.split

    def spy(self, n_good, size, search_space):
        view = split(self, n_good, size, search_space)
        good = self.trials_at(view.good) if view.fast else None
        others = self.trials_at(view.others if view.fast else np.concatenate([view.good, view.others]))
        seen.append((good, others, list(self.trials)))
        return view

    monkeypatch.setattr(_History, "split", spy)
    return seen


def _ask_tell(sampler: optuna.samplers.BaseSampler, n: int, *, objective=_bowl, directions=("minimize",)):
    study = optuna.create_study(sampler=sampler, directions=list(directions))
    proposals = []
    for _ in range(n):
        trial = study.ask()
        params = PLANE.sample(trial)
        proposals.append(params)
        study.tell(trial, objective(params))
    return study, proposals


def test_view_is_bounded_and_holds_the_best_trials(views):
    _ask_tell(BoundedTPESampler(seed=0, multivariate=True, max_history=30, n_startup_trials=5), 90)
    assert len(views) == 90 - 5  # every ask after the startup trials models a view
    # Up to the bound the view is the whole history; from the 32nd ask (31 finished before it) it is bounded.
    assert [len(good) + len(others) for good, others, _ in views[: 31 - 5]] == list(range(5, 31))
    views[:] = views[31 - 5 :]
    for good, others, finished in views:
        assert len(good) + len(others) == 30
        best = sorted(finished, key=lambda t: t.value)[: default_gamma(len(finished))]
        assert {t.number for t in good} == {t.number for t in best}  # full history's good group
        # the others: the most recent of the rest
        rest = sorted((t for t in finished if t not in good), key=lambda t: t.number)
        assert [t.number for t in others] == [t.number for t in rest[-len(others) :]]


def test_below_the_bound_proposals_match_optunas_tpe():
    # Same model and the same random draws; only the arithmetic differs (scipy vs Optuna's own).
    settings = {"seed": 5, "multivariate": True, "n_startup_trials": 5}
    _, ours = _ask_tell(BoundedTPESampler(max_history=100, **settings), 40)
    _, optunas = _ask_tell(optuna.samplers.TPESampler(**settings), 40)
    assert [p["n"] for p in ours] == [p["n"] for p in optunas]
    np.testing.assert_allclose(
        [[p["x"], p["y"]] for p in ours], [[p["x"], p["y"]] for p in optunas], rtol=1e-6
    )


def test_startup_trials_are_counted_again_for_each_study(monkeypatch):
    """The sampler remembers that a study's startup trials are done; a second study with the same sampler
    starts with random trials again, as Optuna's TPE does."""
    sampler = BoundedTPESampler(seed=0, multivariate=True, n_startup_trials=3)
    modelled: list[int] = []
    original = BoundedTPESampler._sample

    def spy(self, study, trial, search_space):
        modelled.append(trial.number)
        return original(self, study, trial, search_space)

    monkeypatch.setattr(BoundedTPESampler, "_sample", spy)
    space = {"x": optuna.distributions.FloatDistribution(-1.0, 1.0)}
    for _ in range(2):
        modelled.clear()
        study = optuna.create_study(sampler=sampler)
        for _ in range(6):
            trial = study.ask(space)
            study.tell(trial, trial.params["x"] ** 2)
        assert modelled == [3, 4, 5]


def test_same_seed_same_proposals_past_the_bound():
    def run(seed: int) -> list[dict]:
        return _ask_tell(
            BoundedTPESampler(seed=seed, multivariate=True, max_history=20, n_startup_trials=5), 60
        )[1]

    first = run(3)
    assert run(3) == first
    assert run(4) != first


@pytest.mark.parametrize("constant_liar", [False, True])
def test_fast_path_models_what_optunas_split_would(monkeypatch, constant_liar):
    # The fast path (numpy index) and Optuna's own split and parameter reading, on the same view, give the
    # same observations, hence the same proposals.
    def run() -> list[dict]:
        sampler = BoundedTPESampler(
            seed=1, multivariate=True, max_history=25, n_startup_trials=5, constant_liar=constant_liar
        )
        study, proposals = _ask_tell(sampler, 50)
        for _ in range(3):  # running trials: the constant liar models them as bad
            proposals.append(PLANE.sample(study.ask()))
        return proposals

    fast = run()
    split = _History.split

    def optunas_split(self, n_good, size, search_space):
        return split(self, n_good, size, search_space)._replace(fast=False)

    monkeypatch.setattr(_History, "split", optunas_split)
    assert run() == fast


def test_still_finds_the_optimum_region():
    # 120 trials, bounded from the 32nd. Uniform random search has a median value of about 25 on this box
    # and gets below 0.05 with probability ~3% in 120 trials; this seed reaches 0.002, seeds 0-7 all < 0.05.
    _, proposals = _ask_tell(BoundedTPESampler(seed=0, multivariate=True, max_history=30), 120)
    values = [_bowl(p) for p in proposals]
    assert min(values) < 0.05
    assert np.median(values[-40:]) < 2.0


def test_run_study_with_make_sampler_past_the_default_bound():
    space = SearchSpace.from_dict({"x": {"float": [-5.0, 5.0]}})
    summary = run_study(
        lambda h: (h.params["x"] - 2.0) ** 2, space, sampler="tpe", n_trials=DEFAULT_MAX_HISTORY + 20, seed=1
    )
    assert summary.best_value is not None
    assert summary.best_value < 1e-3


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 99, 240, 241, 251, 1000, 5000])
def test_good_group_size_is_optunas_default_gamma(n):
    assert good_group_size(n, n_objectives=1) == default_gamma(n)
    assert good_group_size(n, n_objectives=2) == default_gamma_multiobjective(n)


def test_multi_objective_view_holds_the_first_front(views):
    def two(p: dict) -> tuple[float, float]:
        return (p["x"] - 1) ** 2 + p["n"] ** 2, (p["x"] + 1) ** 2 + (p["y"] - 1) ** 2

    sampler = make_sampler("motpe", seed=0, multi_objective=True, n_startup_trials=5)
    sampler._max_history = 24  # a short bound for a short test
    _, proposals = _ask_tell(sampler, 60, objective=two, directions=("minimize", "minimize"))
    assert all(PLANE["x"].contains(p["x"]) and p["n"] in range(-3, 4) for p in proposals)
    assert len(views) == 60 - 5  # every ask after the startup trials; bounded from the 26th
    views[:] = views[25 - 5 :]
    for good, view, finished in views:
        assert good is None  # Optuna's own split (non-domination ranks) on the view
        assert len(view) == 24
        front = {t.number for t in finished if not any(_dominates(o, t) for o in finished)}
        assert front <= {t.number for t in view}


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    return all(x <= y for x, y in zip(a.values, b.values, strict=True)) and a.values != b.values


def test_constant_liar_models_the_running_trials(monkeypatch, views):
    modelled: list[list[int]] = []
    params_of = BoundedTPESampler._params_of

    def spy(self, running, study):
        modelled.append([t.number for t in running])
        return params_of(self, running, study)

    monkeypatch.setattr(BoundedTPESampler, "_params_of", spy)
    sampler = make_sampler("tpe", seed=0, space=PLANE, constant_liar=True, n_startup_trials=5)
    sampler._max_history = 20
    study, _ = _ask_tell(sampler, 30)
    for _ in range(4):
        PLANE.sample(study.ask())
    # the 4th of the running trials saw the 3 before it (not itself), and 20 finished trials
    assert modelled[-1] == [30, 31, 32]
    good, others, finished = views[-1]
    assert len(finished) == 30
    assert len(good) + len(others) == 20


def test_resume_models_the_trials_loaded_from_storage(tmp_path, views):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = run_study(
        lambda h: _bowl(h.params), PLANE, sampler="random", storage=storage, n_trials=40, seed=0
    )
    sampler = BoundedTPESampler(seed=0, multivariate=True, max_history=20, constant_liar=False)
    second = run_study(
        lambda h: _bowl(h.params), PLANE, sampler=sampler, storage=storage, n_trials=45, seed=0
    )
    assert second.n_complete == 45
    good, others, finished = views[0]
    assert len(finished) == 40
    assert len(good) + len(others) == 20
    assert first.best_trial in {t.number for t in good}


def test_conditional_space_groups_match_optunas():
    space = SearchSpace.from_dict(
        {
            "kind": {"choice": ["a", "b", "c"]},
            "lr": {"float": [1e-4, 1.0], "log": True},
            "gamma": {"float": [0.0, 1.0], "when": {"kind": "a"}},
            "degree": {"int": [1, 5], "when": {"kind": "b"}},
        }
    )
    sampler = make_sampler("tpe", seed=0, space=space, n_startup_trials=5)
    sampler._max_history = 20
    assert isinstance(sampler._group_decomposed_search_space, _IncrementalGroups)
    summary = run_study(
        lambda h: abs(math.log10(h.params["lr"]) + 2) + (h.params["kind"] != "a"),
        space,
        sampler=sampler,
        n_trials=50,
    )
    assert summary.n_complete == 50
    # The groups Optuna computes from scratch for the same trials.
    study = sampler._group_decomposed_search_space._new.study
    ours = sampler._group_decomposed_search_space.calculate(study).search_spaces
    optunas = _GroupDecomposedSearchSpace(include_pruned=True).calculate(study).search_spaces
    assert ours == optunas
    assert sorted(map(sorted, ours)) == [["degree"], ["gamma"], ["kind", "lr"]]


def test_intersection_space_matches_optunas_when_a_range_changes():
    # A parameter whose distribution changes leaves the joint (relative) space; TPE then samples it alone,
    # and the view reads it through Optuna's path (its values under two distributions).
    sampler = BoundedTPESampler(seed=0, multivariate=True, max_history=15, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    for i in range(40):
        high = 5.0 if i < 25 else 6.0
        trial = study.ask()
        x = trial.suggest_float("x", -5.0, high)
        y = trial.suggest_float("y", -5.0, 5.0)
        assert -5.0 <= x <= high
        study.tell(trial, (x - 1) ** 2 + y**2)
    ours = sampler._search_space.calculate(study)
    assert isinstance(sampler._search_space, _IncrementalIntersection)
    assert ours == IntersectionSearchSpace(include_pruned=True).calculate(study)
    assert list(ours) == ["y"]


def test_fails_loudly_when_optunas_estimator_changes(monkeypatch):
    monkeypatch.setattr(_parzen, "_ESTIMATORS_CHECKED", set())
    monkeypatch.setattr(_ParzenEstimator, "log_pdf", lambda self, samples: np.zeros(16))
    with pytest.raises(RuntimeError, match="Parzen estimator no longer matches tunelab's vectorized copy"):
        BoundedTPESampler(seed=0)


_PARAMETERS = _ParzenEstimatorParameters(
    prior_weight=1.0,
    consider_magic_clip=True,
    consider_endpoints=False,
    weights=default_weights,
    multivariate=True,
)
_SPACE = {
    "f": FloatDistribution(-3.0, 7.0),
    "lf": FloatDistribution(1e-5, 1.0, log=True),
    "i": IntDistribution(-5, 5),
    "li": IntDistribution(1, 1024, log=True),
    "sf": FloatDistribution(0.0, 1.0, step=0.125),
    "c": CategoricalDistribution(["a", "b", "c", "d"]),
}


@pytest.mark.parametrize("n_observations", [0, 1, 7, 60])
@pytest.mark.parametrize("predetermined", [False, True])
def test_fast_parzen_estimator_matches_optunas(n_observations, predetermined):
    rng = np.random.RandomState(n_observations)
    observations = {
        "f": rng.uniform(-3, 7, n_observations),
        "lf": np.exp(rng.uniform(np.log(1e-5), 0, n_observations)),
        "i": rng.randint(-5, 6, n_observations).astype(float),
        "li": rng.randint(1, 1025, n_observations).astype(float),
        "sf": rng.randint(0, 9, n_observations) * 0.125,
        "c": rng.randint(0, 4, n_observations).astype(float),
    }
    weights = rng.uniform(0.5, 1.0, n_observations) if predetermined else None
    ours = _FastParzenEstimator(observations, _SPACE, _PARAMETERS, weights)
    optunas = _ParzenEstimator(observations, _SPACE, _PARAMETERS, weights)
    for seed in range(3):
        drawn = ours.sample(np.random.RandomState(seed), 24)
        expected = optunas.sample(np.random.RandomState(seed), 24)
        for name in _SPACE:
            np.testing.assert_allclose(drawn[name], expected[name], rtol=1e-7, err_msg=name)
        np.testing.assert_allclose(ours.log_pdf(drawn), optunas.log_pdf(drawn), rtol=1e-7, atol=1e-9)


def test_a_copy_of_a_used_sampler_proposes_the_same():
    sampler = BoundedTPESampler(seed=2, multivariate=True, max_history=20, n_startup_trials=5)
    study, _ = _ask_tell(sampler, 30)
    twin = copy.deepcopy(sampler)
    assert twin._history is None  # rebuilt from the study on first use
    other = optuna.create_study(sampler=twin)
    other.add_trials(study.get_trials())
    assert PLANE.sample(other.ask()) == PLANE.sample(study.ask())


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_history must be a whole number >= 1, got 0"):
        BoundedTPESampler(max_history=0)
    with pytest.raises(TypeError, match="custom gamma is not supported"):
        BoundedTPESampler(gamma=lambda n: 3)
    # The model always starts: the bound is at least n_startup_trials.
    assert BoundedTPESampler(max_history=5, n_startup_trials=40).max_history == 40


@pytest.mark.parametrize(
    "method", ["_sample", "_get_internal_repr", "_compute_acquisition_func", "_get_params"]
)
def test_fails_loudly_when_optunas_tpe_changes(monkeypatch, method):
    monkeypatch.setattr(optuna.samplers.TPESampler, method, lambda self, renamed: None)
    with pytest.raises(RuntimeError, match=rf"TPESampler has changed where .*{method}.*_bounded_tpe.py"):
        BoundedTPESampler(seed=0)


def test_new_trials_are_found_once_whatever_order_they_finish_in():
    study = optuna.create_study()
    new = _NewTrials(study)
    asked = [study.ask({"x": FloatDistribution(0.0, 1.0)}) for _ in range(3)]
    study.tell(asked[1], 1.0)
    assert [t.number for t in new.collect(study.get_trials(deepcopy=False))] == [1]
    assert [t.number for t in new.running(study.get_trials(deepcopy=False))] == [0, 2]
    study.tell(asked[0], state=TrialState.PRUNED)
    study.tell(asked[2], state=TrialState.FAIL)
    study.tell(study.ask({"x": FloatDistribution(0.0, 1.0)}), 2.0)
    assert [t.number for t in new.collect(study.get_trials(deepcopy=False))] == [0, 3]
    assert new.collect(study.get_trials(deepcopy=False)) == []
    assert new.n_finished == 3
    # A list out of number order is read in full, with the same result.
    shuffled = _NewTrials(study)
    assert [t.number for t in shuffled.collect(study.get_trials(deepcopy=False)[::-1])] == [0, 1, 3]


def test_pruned_trials_fill_the_good_group_when_few_complete():
    study = optuna.create_study()
    for i in range(40):
        trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
        if i % 10 == 0:
            study.tell(trial, float(i))
        else:
            trial.report(float(i % 7), step=i % 3)
            study.tell(trial, state=TrialState.PRUNED)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    history = _History(study)
    history.add(study.get_trials())
    view = history.split(6, 20, {"x": FloatDistribution(0.0, 1.0)})
    assert not view.fast  # Optuna's split decides, on this view
    chosen = {t.number for t in history.trials_at(np.concatenate([view.good, view.others]))}
    assert len(chosen) == 20
    assert {t.number for t in finished if t.state == TrialState.COMPLETE} <= chosen  # 4 complete trials
    # Optuna ranks pruned trials by their last step (later first), then by the value there: the 2 best are
    # those that reached step 2 with the lowest values.
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    ranked = sorted(
        pruned, key=lambda t: (-max(t.intermediate_values), t.intermediate_values[max(t.intermediate_values)])
    )
    assert {t.number for t in ranked[:2]} <= chosen
