"""Fused populations through the study loop: packing, Optuna records, equivalence, divergence, ASHA
shrinking, sizing under a time budget, and the time budget within an epoch."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tunelab.clock import ManualClock
from tunelab.execute import Evaluator, trial_spec
from tunelab.execute._fusion import decide
from tunelab.search import AshaScheduler, NoEvents, SearchSpace, structural_paths
from tunelab.search._packing import pack_key
from tunelab.spec import PER_MEMBER_PATHS, ExperimentSpec, parse_spec

BASE = {
    "name": "pop",
    "data": {"source": "digits", "max_rows": 600},
    "model": {"type": "mlp", "hidden": [24]},
    "train": {"epochs": 3, "batch_size": 64},
}


@pytest.fixture(scope="module")
def base() -> tuple[ExperimentSpec, Evaluator]:
    spec = parse_spec(BASE)
    return spec, Evaluator(spec, spec.data)


@pytest.fixture
def study(tmp_path, run_populations):
    """A population study on digits (``spec`` defaults to BASE's, the data to ``base``'s evaluator)."""

    def run(
        base: tuple[ExperimentSpec, Evaluator], space: dict[str, Any], *, spec: Any = None, **kwargs: Any
    ) -> optuna.Study:
        return run_populations(tmp_path, spec or base[0], base[1], space, **kwargs)

    return run


SPACE = {
    "train.lr": {"float": [1e-3, 3e-2], "log": True},
    "train.weight_decay": {"float": [1e-5, 1e-2], "log": True},
    "model.dropout": {"float": [0.0, 0.3]},
    "_depth": {"int": [1, 2]},
    "model.hidden": {"per_layer": "_depth", "int": [8, 32], "log": True},
    "train.batch_size": {"choice": [32, 64]},
}


def test_population_study_stores_every_trial_and_packs_by_structure(study, base):
    result = study(base, SPACE, population_size=4, n_trials=8)
    trials = result.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    for trial in trials:
        assert set(trial.params) >= {"train.lr", "model.dropout", "_depth", "train.batch_size"}
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert trial.value == trial.intermediate_values[3]  # no early stopping: the last epoch's value
        assert trial.user_attrs["best_epochs"][0] in (1, 2, 3)
    populations = defaultdict(list)
    for trial in trials:
        populations[trial.user_attrs["population"]].append(trial)
    assert sorted(len(members) for members in populations.values()) == [4, 4]
    structural = structural_paths(SearchSpace.from_dict(SPACE), PER_MEMBER_PATHS)
    assert structural == {"_depth", "model.hidden", "train.batch_size"}
    space = SearchSpace.from_dict(SPACE)
    for members in populations.values():
        keys = {pack_key(t.params, space, structural) for t in members}
        assert len(keys) == 1  # one structure per population
        assert len({t.params["train.lr"] for t in members}) == len(members)  # the sampler varied the rest
        assert len({t.params["model.dropout"] for t in members}) == len(members)


def test_member_matches_the_same_config_trained_alone(study, base):
    """The correctness bar of docs/FUSED.md, through the whole search: each trial's value equals what the
    sequential objective (``Evaluator.score``) gets for its parameters. Batches are identical (the
    population draws the single trainer's permutation from the same seed); dropout is 0 because the single
    trainer draws dropout masks from torch's global RNG and a population from its own generator. The per-step
    cosine schedule, weight decay on weights only, label smoothing, clipping and early stopping with
    restore_best are all per member."""
    spec = parse_spec(
        {
            **BASE,
            "train": {
                "epochs": 6,
                "batch_size": 64,
                "optimizer": "adamw",
                "schedule": {"name": "cosine"},
                "early_stopping": {
                    "monitor": "val_loss",
                    "patience": 1,
                    "min_delta": 0.05,
                    "restore_best": True,
                },
            },
        }
    )
    space = {
        "train.lr": {"float": [0.02, 2.0], "log": True},
        "train.weight_decay": {"float": [1e-4, 1e-1], "log": True},
        "train.label_smoothing": {"float": [0.0, 0.2]},
        "train.grad_clip": {"float": [0.05, 5.0], "log": True},
    }
    result = study(base, space, spec=spec, population_size=3, n_trials=3)
    evaluator = base[1]
    trials = result.get_trials(deepcopy=False)
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        alone = trial_spec(spec, SearchSpace.from_dict(space).overrides_from_params(trial.params))
        value, best_epoch = evaluator.score(alone, None, "val_loss")
        assert trial.value == pytest.approx(value, rel=1e-5, abs=1e-6)
        assert trial.user_attrs["best_epochs"] == [best_epoch]
    # Early stopping cut some member short, and restore_best gave it its best epoch's value, not its last.
    assert any(len(t.intermediate_values) < 6 for t in trials)
    assert any(t.value != t.intermediate_values[max(t.intermediate_values)] for t in trials)


def test_cross_validation_trains_the_population_fold_by_fold(study, base):
    """With folds, the members go on from fold to fold as a new population; each fold's value is what the
    sequential objective gets on that fold, and reports continue at epochs offset by the fold's index."""
    spec, _ = base
    split = spec.data.split.model_copy(update={"method": "stratified_kfold", "n_folds": 2})
    evaluator = Evaluator(spec, spec.data.model_copy(update={"split": split}))
    space = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}
    result = study((spec, evaluator), space, population_size=2, n_trials=2, folds=[0, 1])
    for trial in result.get_trials(deepcopy=False):
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]
        alone = trial_spec(spec, {"train": {"lr": trial.params["train.lr"]}})
        expected = [evaluator.score(alone, fold, "val_loss")[0] for fold in (0, 1)]
        assert trial.user_attrs["fold_values"] == pytest.approx(expected, rel=1e-5)
        assert trial.value == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_a_diverging_member_fails_its_trial_and_the_others_complete(study, base):
    spec = parse_spec({**BASE, "train": {"epochs": 3, "batch_size": 64, "optimizer": "sgd"}})
    fixed = {"model.hidden_0": 24, "_depth": 1, "train.batch_size": 64, "model.dropout": 0.0}
    lrs = [0.05, 1e9, 0.1, 0.2]
    space = {**SPACE, "train.lr": {"float": [1e-3, 1e10], "log": True}}
    enqueue = [{**fixed, "train.lr": lr, "train.weight_decay": 1e-4} for lr in lrs]
    result = study(base, space, spec=spec, enqueue=enqueue, population_size=4, n_trials=4)
    trials = result.get_trials(deepcopy=False)
    assert [t.params["train.lr"] for t in trials] == lrs
    assert len({t.user_attrs["population"] for t in trials}) == 1  # the four trained as one population
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert "training diverged" in trials[1].user_attrs["fail_reason"]
    assert "lr is 1e+09" in trials[1].user_attrs["fail_reason"]
    assert all(math.isfinite(t.value) and len(t.intermediate_values) == 3 for t in trials if t.value)


def test_asha_stop_shrinks_the_population(study, base):
    spec = parse_spec({**BASE, "train": {"epochs": 6, "batch_size": 64}})
    space = {"train.lr": {"float": [1e-4, 3e-2], "log": True}}
    asha = AshaScheduler(min_resource=1, max_resource=6, reduction_factor=3)
    result = study(base, space, spec=spec, scheduler=asha, population_size=6, n_trials=6)
    trials = result.get_trials(deepcopy=False)
    assert len({t.user_attrs["population"] for t in trials}) == 1
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned
    assert complete
    # A stopped member left the population at its rung (epoch 1 or 3); the others trained all six epochs.
    assert {max(t.intermediate_values) for t in pruned} <= {1, 3}
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4, 5, 6] for t in complete)
    # Each trial was told when it ended, not when the population did: the pruned ones first.
    assert max(t.datetime_complete for t in pruned) < min(t.datetime_complete for t in complete)
    # The members reached the first rung together and were ranked together (ASHA's rule over all six
    # results, not over those reported before each): exactly the best max(1, 6 // 3) = 2 went on.
    first_rung = {t.number: t.intermediate_values[1] for t in trials}
    cutoff = sorted(first_rung.values())[max(1, len(trials) // 3) - 1]  # val_loss: lower is better
    for trial in trials:
        assert (max(trial.intermediate_values) > 1) == (first_rung[trial.number] <= cutoff)
    assert sum(max(t.intermediate_values) > 1 for t in trials) == 2


def test_decide_grows_population_while_throughput_rises_ten_percent():
    rates = {"sequential": 100.0, "K=1": 90.0, "K=2": 170.0, "K=4": 300.0, "K=8": 320.0}
    decision = decide("auto", rates, population_size=None)
    assert (decision.fused, decision.population_size) == (True, 4)  # 320 < 1.1 * 300
    slow = decide("auto", {"sequential": 100.0, "K=1": 60.0, "K=2": 100.0}, population_size=None)
    assert (slow.fused, slow.population_size) == (False, 1)
    assert "below" in slow.reason
    given = decide("auto", {}, population_size=5)
    assert (given.fused, given.population_size) == (True, 5)


@pytest.mark.parametrize(("flop_rate", "first_size"), [(1.0, 1), (1e18, 4)])
def test_a_time_budget_sizes_the_population_by_its_cost(study, base, flop_rate, first_size):
    """With a time budget, a population holds as many members as its structure's expected work lets fit in a
    share of the time left, at the assumed training rate until one population has been measured: at one
    FLOP/s a single member, at 1e18 FLOP/s the configured maximum."""
    space = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}
    result = study(base, space, population_size=4, n_trials=5, timeout_s=600.0, flop_rate=flop_rate)
    trials = result.get_trials(deepcopy=False)
    first = trials[0].user_attrs["population"]
    assert sum(t.user_attrs["population"] == first for t in trials) == first_size
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5


class SpendsTheBudgetAt(NoEvents):
    """A progress listener that spends the study's time (moves the fake clock past it) as trial ``number``
    starts: the population holding that trial trains with the budget already spent."""

    def __init__(self, clock: ManualClock, number: int) -> None:
        self.clock, self.number = clock, number

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if number == self.number:
            self.clock.advance(1e6)


def test_a_spent_time_budget_ends_the_running_population_once_a_trial_has_completed(study, base):
    """Within a population the budget is checked after every minibatch: once it is spent and the study holds
    a completed trial, the members still training end at once, mid-epoch (no epoch reported), as pruned
    trials saying why. The first population trained before the deadline; the study then stops on time."""
    clock = ManualClock()
    result = study(
        base,
        SPACE,
        population_size=2,
        n_trials=6,
        timeout_s=3600.0,
        clock=clock,
        events=SpendsTheBudgetAt(clock, 2),
    )
    trials = result.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert [sorted(t.intermediate_values) for t in trials[:2]] == [[1, 2, 3]] * 2
    for trial in trials[2:]:  # cut within its first epoch, of at least two minibatches: nothing reported
        assert trial.intermediate_values == {}
        assert trial.user_attrs["stopped_by"] == "time budget"
        assert trial.user_attrs["population"] == 2


def test_a_time_budget_spent_before_any_trial_completed_cuts_the_first_population_after_an_epoch(study, base):
    """Before the study holds a completed trial, time ends a population only once it has a value: its
    members are recorded complete with their last epoch's value, and the study stops after it."""
    clock = ManualClock()
    result = study(
        base,
        SPACE,
        population_size=2,
        n_trials=6,
        timeout_s=1.0,
        clock=clock,
        events=SpendsTheBudgetAt(clock, 0),
    )
    trials = result.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        assert trial.user_attrs["stopped_by"] == "time budget"
        assert trial.user_attrs["cut_by_budget"].endswith(
            "stopped after reporting epoch 1, and its value is epoch 1's"
        )
        assert list(trial.intermediate_values) == [1]
        assert trial.value == trial.intermediate_values[1]
        assert trial.user_attrs["best_epochs"] == [1]


def test_a_spent_time_budget_ends_later_cross_validated_populations_within_their_first_fold(study, base):
    spec, _ = base
    split = spec.data.split.model_copy(update={"method": "stratified_kfold", "n_folds": 2})
    evaluator = Evaluator(spec, spec.data.model_copy(update={"split": split}))
    space = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}
    clock = ManualClock()
    result = study(
        (spec, evaluator),
        space,
        population_size=2,
        n_trials=4,
        folds=[0, 1],
        timeout_s=3600.0,
        clock=clock,
        events=SpendsTheBudgetAt(clock, 2),
    )
    trials = result.get_trials(deepcopy=False)
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    for trial in trials[:2]:  # no trial had completed: both folds
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]
    for trial in trials[2:]:  # cut within the first fold's first epoch
        assert trial.state == TrialState.PRUNED
        assert trial.intermediate_values == {}
        assert trial.user_attrs["stopped_by"] == "time budget"
