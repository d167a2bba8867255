"""Fused populations inside the search: packing, Optuna records, equivalence, divergence, ASHA shrinking."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tunelab.search import AshaScheduler, NoScheduler, SearchSpace, make_sampler
from tunelab.search._fusion import decide
from tunelab.search._packing import Packer, pack_key, startup_populations, structural_paths
from tunelab.search._population_study import run_population_study
from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.tune._trials import Evaluator, trial_spec

BASE = {
    "name": "pop",
    "data": {"source": "digits", "max_rows": 600},
    "model": {"type": "mlp", "hidden": [24]},
    "train": {"epochs": 3, "batch_size": 64},
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models train fastest on one thread (and the shared CPU is not oversubscribed)."""
    torch.set_num_threads(1)  # the shared conftest restores the count afterwards


@pytest.fixture(scope="module")
def base() -> tuple[ExperimentSpec, Evaluator]:
    spec = parse_spec(BASE)
    return spec, Evaluator(spec, spec.data)


def study(
    tmp_path: Any,
    base: tuple[ExperimentSpec, Evaluator],
    space: dict[str, Any],
    *,
    enqueue: list[dict[str, Any]] = (),  # type: ignore[assignment]
    spec: ExperimentSpec | None = None,
    metric: str = "val_loss",
    scheduler: Any = None,
    **budget: Any,
) -> optuna.Study:
    """Run a population study on digits; the finished study, loaded back from its SQLite file."""
    spec = spec or base[0]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    search_space = SearchSpace.from_dict(space)
    sampler = make_sampler("tpe", seed=3, space=search_space)
    if enqueue:
        seeded = optuna.create_study(storage=url, study_name="pop", sampler=sampler)
        for params in enqueue:
            seeded.enqueue_trial(params)
    run_population_study(
        lambda params: trial_spec(spec, params),
        base[1],
        search_space,
        metric=metric,
        sampler=sampler,
        scheduler=scheduler or NoScheduler(),
        storage=url,
        study_name="pop",
        **budget,
    )
    return optuna.load_study(study_name="pop", storage=url)


SPACE = {
    "train.lr": {"float": [1e-3, 3e-2], "log": True},
    "train.weight_decay": {"float": [1e-5, 1e-2], "log": True},
    "model.dropout": {"float": [0.0, 0.3]},
    "_depth": {"int": [1, 2]},
    "model.hidden": {"per_layer": "_depth", "int": [8, 32], "log": True},
    "train.batch_size": {"choice": [32, 64]},
}


def test_population_study_stores_every_trial_and_packs_by_structure(tmp_path, base):
    result = study(tmp_path, base, SPACE, population_size=4, n_trials=8)
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
    structural = structural_paths(SearchSpace.from_dict(SPACE))
    assert structural == {"_depth", "model.hidden", "train.batch_size"}
    space = SearchSpace.from_dict(SPACE)
    for members in populations.values():
        keys = {pack_key(t.params, space, structural) for t in members}
        assert len(keys) == 1  # one structure per population
        assert len({t.params["train.lr"] for t in members}) == len(members)  # the sampler varied the rest
        assert len({t.params["model.dropout"] for t in members}) == len(members)


def test_member_matches_the_same_config_trained_alone(tmp_path, base):
    """The correctness bar of FUSED.md, through the whole search: each trial's value equals what the
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
    result = study(tmp_path, base, space, spec=spec, population_size=3, n_trials=3)
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


def test_cross_validation_trains_the_population_fold_by_fold(tmp_path, base):
    """With folds, the members go on from fold to fold as a new population; each fold's value is what the
    sequential objective gets on that fold, and reports continue at epochs offset by the fold's index."""
    spec, _ = base
    split = spec.data.split.model_copy(update={"method": "stratified_kfold", "n_folds": 2})
    evaluator = Evaluator(spec, spec.data.model_copy(update={"split": split}))
    space = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}
    result = study(tmp_path, (spec, evaluator), space, population_size=2, n_trials=2, folds=[0, 1])
    for trial in result.get_trials(deepcopy=False):
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]
        alone = trial_spec(spec, {"train": {"lr": trial.params["train.lr"]}})
        expected = [evaluator.score(alone, fold, "val_loss")[0] for fold in (0, 1)]
        assert trial.user_attrs["fold_values"] == pytest.approx(expected, rel=1e-5)
        assert trial.value == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_a_diverging_member_fails_its_trial_and_the_others_complete(tmp_path, base):
    spec = parse_spec({**BASE, "train": {"epochs": 3, "batch_size": 64, "optimizer": "sgd"}})
    fixed = {"model.hidden_0": 24, "_depth": 1, "train.batch_size": 64, "model.dropout": 0.0}
    lrs = [0.05, 1e9, 0.1, 0.2]
    space = {**SPACE, "train.lr": {"float": [1e-3, 1e10], "log": True}}
    enqueue = [{**fixed, "train.lr": lr, "train.weight_decay": 1e-4} for lr in lrs]
    result = study(tmp_path, base, space, spec=spec, enqueue=enqueue, population_size=4, n_trials=4)
    trials = result.get_trials(deepcopy=False)
    assert [t.params["train.lr"] for t in trials] == lrs
    assert len({t.user_attrs["population"] for t in trials}) == 1  # the four trained as one population
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert "training diverged" in trials[1].user_attrs["fail_reason"]
    assert "lr is 1e+09" in trials[1].user_attrs["fail_reason"]
    assert all(math.isfinite(t.value) and len(t.intermediate_values) == 3 for t in trials if t.value)


def test_asha_stop_shrinks_the_population(tmp_path, base):
    spec = parse_spec({**BASE, "train": {"epochs": 6, "batch_size": 64}})
    space = {"train.lr": {"float": [1e-4, 3e-2], "log": True}}
    asha = AshaScheduler(min_resource=1, max_resource=6, reduction_factor=3)
    result = study(tmp_path, base, space, spec=spec, scheduler=asha, population_size=6, n_trials=6)
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
def test_a_time_budget_sizes_the_population_by_its_cost(tmp_path, base, flop_rate, first_size):
    """With a time budget, a population holds as many members as its structure's expected work lets fit in a
    share of the time left, at the assumed training rate until one population has been measured: at one
    FLOP/s a single member, at 1e18 FLOP/s the configured maximum."""
    space = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}
    url = f"sqlite:///{tmp_path / 'study.db'}"
    search_space = SearchSpace.from_dict(space)
    spec, evaluator = base
    run_population_study(
        lambda params: trial_spec(spec, params),
        evaluator,
        search_space,
        metric="val_loss",
        sampler=make_sampler("tpe", seed=3, space=search_space),
        scheduler=NoScheduler(),
        storage=url,
        study_name="pop",
        population_size=4,
        n_trials=5,
        timeout_s=600.0,
        flop_rate=flop_rate,
    )
    trials = optuna.load_study(study_name="pop", storage=url).get_trials(deepcopy=False)
    first = trials[0].user_attrs["population"]
    assert sum(t.user_attrs["population"] == first for t in trials) == first_size
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5


def test_a_packer_on_a_shared_storage_fixes_the_structure_without_enqueueing(monkeypatch):
    """With other processes asking the same study, a pack's other members are asked through Optuna's
    PartialFixedSampler: nothing is enqueued that another process could take. A waiting trial of another
    structure that an ask takes anyway ends the pack and starts the next one."""
    space = SearchSpace.from_dict(
        {"train.batch_size": {"choice": [16, 32, 64]}, "train.lr": {"float": [1e-4, 1e-1], "log": True}}
    )
    study = optuna.create_study(sampler=make_sampler("tpe", seed=0, space=space))
    packer = Packer(study, space, shared=True)
    enqueued = []
    monkeypatch.setattr(study, "enqueue_trial", lambda *a, **k: enqueued.append(a))
    pack = packer.next_pack(3)
    assert len(pack) == 3
    assert len({params["train"]["batch_size"] for _, params in pack}) == 1
    assert len({params["train"]["lr"] for _, params in pack}) == 3  # per-member values still sampled
    assert enqueued == []
    assert not isinstance(study.sampler, optuna.samplers.PartialFixedSampler)  # the study's own is back
    # Another process queues a trial of another structure right after this packer looked at the queue
    # (its retry of an interrupted trial, say): the member ask takes it anyway.
    structure = pack[0][1]["train"]["batch_size"]
    other = next(b for b in (16, 32, 64) if b != structure)
    monkeypatch.undo()
    looked = []

    def look_then_race():
        if not looked:
            study.enqueue_trial({"train.batch_size": other, "train.lr": 0.01})
        looked.append(1)
        return None

    packer._next_waiting = look_then_race  # type: ignore[method-assign]
    study.enqueue_trial({"train.batch_size": structure, "train.lr": 0.02})  # this pack's first member
    cut = packer.next_pack(3)
    assert [params["train"]["batch_size"] for _, params in cut] == [structure]  # ended at the stranger
    stranger = packer._next_first
    assert stranger is not None
    assert stranger[1]["train"]["batch_size"] == other
    nxt = packer.next_pack(1)  # which starts the next pack, with its own structure
    assert nxt[0] is stranger


def _finish_pack(study: optuna.Study, pack: list[tuple[optuna.Trial, dict[str, Any]]], value: float) -> None:
    """What the population loop does with a pack: mark its population, tell every trial."""
    for trial, _ in pack:
        trial.set_user_attr("population", pack[0][0].number)
        study.tell(trial, value)


def test_the_first_populations_draw_their_structure_at_random_then_the_sampler_takes_over():
    """TPE's random startup is counted in populations: packed, ten startup trials would be two or three
    structures, and the model would never learn about the others. Here TPE's history makes it propose batch
    size 16 every time; the startup populations still draw theirs at random, and the packs after them are
    TPE's again."""
    space = SearchSpace.from_dict(
        {"train.batch_size": {"choice": [16, 32, 64]}, "train.lr": {"float": [1e-4, 1e-1], "log": True}}
    )

    def biased_study() -> optuna.Study:
        study = optuna.create_study(sampler=make_sampler("tpe", seed=0, space=space, n_startup_trials=2))
        for i in range(30):  # batch 16 is far better; these trials belong to no population
            batch = (16, 32, 64)[i % 3]
            study.add_trial(
                optuna.trial.create_trial(
                    params={"train.batch_size": batch, "train.lr": 10 ** (-1 - 3 * (i / 30))},
                    distributions={
                        "train.batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64]),
                        "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                    },
                    value=0.1 if batch == 16 else 1.0,
                )
            )
        return study

    def first_batches(startup: int, n_packs: int) -> tuple[list[int], list[bool]]:
        study = biased_study()
        packer = Packer(study, space, startup_populations=startup, seed=5)
        asked_at_random: list[bool] = []
        ask = packer._ask

        def recording_ask(**kwargs: Any) -> tuple[optuna.Trial, dict[str, Any]]:
            asked_at_random.append(kwargs.get("sampler") is packer._random)
            return ask(**kwargs)

        packer._ask = recording_ask  # type: ignore[method-assign]
        batches = []
        for _ in range(n_packs):
            pack = packer.next_pack(2)
            assert len({params["train"]["batch_size"] for _, params in pack}) == 1  # still one structure
            batches.append(pack[0][1]["train"]["batch_size"])
            _finish_pack(study, pack, 0.5)
        return batches, asked_at_random

    tpe_only, randoms = first_batches(startup=0, n_packs=6)
    assert tpe_only == [16] * 6
    assert not any(randoms)
    with_startup, randoms = first_batches(startup=4, n_packs=6)
    assert len(set(with_startup[:4])) > 1  # random structures, whatever TPE would propose
    # Each pack asks twice (first trial, one member); only the first asks of the first four are random.
    assert randoms == [True, False] * 4 + [False, False] * 2
    assert with_startup[4:] == [16, 16]  # TPE's own proposals after the startup


def test_the_startup_populations_of_a_model_based_sampler():
    assert startup_populations(make_sampler("tpe", seed=0)) == 10  # Optuna's default n_startup_trials
    assert startup_populations(make_sampler("tpe", seed=0, n_startup_trials=4)) == 4
    assert startup_populations(make_sampler("gp", seed=0, n_startup_trials=3)) == 3
    assert startup_populations(make_sampler("random", seed=0)) == 0
    assert startup_populations(make_sampler("qmc", seed=0)) == 0


def test_a_startup_pack_does_not_repeat_its_first_trial_in_its_members():
    """The study's TPE, seeded with the study's seed, draws its own startup trials from RandomSampler(seed);
    the packer's startup draws come from another stream, or a pack's members would repeat its first trial's
    values (a population of copies)."""
    space = SearchSpace.from_dict(
        {"train.lr": {"float": [1e-4, 1e-1], "log": True}, "train.weight_decay": {"float": [1e-6, 1e-2]}}
    )
    study = optuna.create_study(sampler=make_sampler("tpe", seed=7, space=space))
    packer = Packer(study, space, startup_populations=3, seed=7)
    for _ in range(3):
        pack = packer.next_pack(3)
        lrs = [params["train"]["lr"] for _, params in pack]
        assert len(set(lrs)) == 3, lrs
        _finish_pack(study, pack, 0.5)


def test_a_spent_time_budget_ends_the_running_population_once_a_trial_has_completed(
    tmp_path, base, monkeypatch
):
    """Within a population the budget is checked after every minibatch: once it is spent and the study holds
    a completed trial, the members still training end at once, mid-epoch, as pruned trials saying why. (The
    loop's own check between populations keeps the real clock here, so the study goes on to its n_trials.)"""
    from tunelab.fused import PopulationTrainer
    from tunelab.search._study import _Budget

    monkeypatch.setattr(_Budget, "past_deadline", lambda self: True)
    steps: dict[int, int] = {}  # minibatch steps per population (its trainer's id)
    train_step = PopulationTrainer.train_step

    def counted(self, x, y):
        steps[id(self)] = steps.get(id(self), 0) + 1
        return train_step(self, x, y)

    monkeypatch.setattr(PopulationTrainer, "train_step", counted)
    result = study(tmp_path, base, SPACE, population_size=2, n_trials=6, timeout_s=3600.0)
    trials = result.get_trials(deepcopy=False)
    first = trials[0].user_attrs["population"]
    for trial in trials:
        if trial.user_attrs["population"] == first:  # no trial had completed: it trains to the end
            assert trial.state == TrialState.COMPLETE
            assert sorted(trial.intermediate_values) == [1, 2, 3]
        else:  # cut within its first epoch: nothing to report
            assert trial.state == TrialState.PRUNED
            assert trial.intermediate_values == {}
            assert trial.user_attrs["stopped_by"] == "time budget"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    first_steps, *later_steps = steps.values()
    assert first_steps >= 3 * 2  # three epochs of at least two minibatches
    assert later_steps == [1, 1]  # the other two populations: one minibatch each


def test_a_spent_time_budget_ends_later_cross_validated_populations_within_their_first_fold(
    tmp_path, base, monkeypatch
):
    from tunelab.search._study import _Budget

    spec, _ = base
    split = spec.data.split.model_copy(update={"method": "stratified_kfold", "n_folds": 2})
    evaluator = Evaluator(spec, spec.data.model_copy(update={"split": split}))
    space = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}
    monkeypatch.setattr(_Budget, "past_deadline", lambda self: True)
    result = study(
        tmp_path, (spec, evaluator), space, population_size=2, n_trials=4, folds=[0, 1], timeout_s=3600.0
    )
    trials = result.get_trials(deepcopy=False)
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    for trial in trials[:2]:  # no trial had completed: both folds
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]
    for trial in trials[2:]:  # cut within the first fold's first epoch
        assert trial.state == TrialState.PRUNED
        assert trial.intermediate_values == {}
        assert trial.user_attrs["stopped_by"] == "time budget"
