"""Packing trials into populations (search-side, no training): structure, shared storages, startup draws."""

from __future__ import annotations

from typing import Any

import optuna

from tunelab.search import SearchSpace, make_sampler, structural_paths
from tunelab.search._packing import Packer, startup_populations
from tunelab.spec import PER_MEMBER_PATHS


def test_structural_paths_are_those_no_member_may_hold_its_own_value_of():
    """Per-member paths come from the spec classes (``tunelab.spec.PER_MEMBER_PATHS``); every other parameter
    is structural, and so is every parameter a structural one depends on."""
    space = SearchSpace.from_dict(
        {
            "train.lr": {"float": [1e-4, 1e-1], "log": True},
            "train.optimizer": {"choice": ["adam", "nesterov"]},
            "train.momentum": {"float": [0.8, 0.99], "when": {"train.optimizer": "nesterov"}},
            "_depth": {"int": [1, 3]},
            "model.hidden": {"per_layer": "_depth", "choice": [16, 32]},
            "model.dropout": {"float": [0.0, 0.5]},
            "train.schedule.min_lr": {"float": [0.0, 1e-5]},
        }
    )
    assert {"train.lr", "model.dropout"} <= set(PER_MEMBER_PATHS)
    assert structural_paths(space, PER_MEMBER_PATHS) == {"train.optimizer", "_depth", "model.hidden"}
    assert structural_paths(space, ()) == set(space)  # a sequential executor: everything is structure


def test_a_packer_on_a_shared_storage_fixes_the_structure_without_enqueueing(monkeypatch):
    """With other processes asking the same study, a pack's other members are asked through Optuna's
    PartialFixedSampler: nothing is enqueued that another process could take. A waiting trial of another
    structure that an ask takes anyway ends the pack and starts the next one."""
    space = SearchSpace.from_dict(
        {"train.batch_size": {"choice": [16, 32, 64]}, "train.lr": {"float": [1e-4, 1e-1], "log": True}}
    )
    study = optuna.create_study(sampler=make_sampler("tpe", seed=0, space=space))
    packer = Packer(study, space, per_member_paths=PER_MEMBER_PATHS, shared=True)
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
        packer = Packer(study, space, per_member_paths=PER_MEMBER_PATHS, startup_populations=startup, seed=5)
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
    packer = Packer(study, space, per_member_paths=PER_MEMBER_PATHS, startup_populations=3, seed=7)
    for _ in range(3):
        pack = packer.next_pack(3)
        lrs = [params["train"]["lr"] for _, params in pack]
        assert len(set(lrs)) == 3, lrs
        _finish_pack(study, pack, 0.5)
