"""Population-based training inside a fused population: exploit copies a member, explore re-configures it.

The scheduler's own rule (who copies whom, by how much values move) is tested in ``test_schedulers_sim.py``;
here is what the population study does with its decisions: the copy (weights, optimizer state, early-stopping
and plateau state), the new per-member hyperparameters, the trial's record, and the isolation of the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tunelab.errors import SpecError
from tunelab.execute import Evaluator, SpecPopulation
from tunelab.search import Decision, Exploit, NoScheduler, PbtScheduler, SearchSpace
from tunelab.search.schedulers import SchedulerDecision
from tunelab.spec import ExperimentSpec, parse_spec

BASE = {
    "name": "pbt",
    "data": {"source": "digits", "max_rows": 600},
    "model": {"type": "mlp", "hidden": [24]},
    "train": {"epochs": 4, "batch_size": 64},
}
SPACE = {
    "train.lr": {"float": [1e-4, 5e-2], "log": True},
    "train.weight_decay": {"float": [1e-6, 1e-2], "log": True},
}
# Four trials of one population, each with its own lr and weight decay.
PARAMS = [
    {"train.lr": lr, "train.weight_decay": wd}
    for lr, wd in [(0.01, 1e-4), (0.002, 1e-3), (0.0005, 1e-5), (0.03, 1e-6)]
]


@pytest.fixture(scope="module")
def base() -> tuple[ExperimentSpec, Evaluator]:
    spec = parse_spec(BASE)
    return spec, Evaluator(spec, spec.data)


class ScriptedPbt(PbtScheduler):
    """PBT whose exploits are given in advance, so a test knows exactly who copies whom, when and with what:
    ``script[(trial, epoch)] = (source, nested new params)``. Everything else is the real PBT's."""

    def __init__(self, space: SearchSpace, script: Mapping[tuple[int, int], tuple[int, dict[str, Any]]]):
        super().__init__(space, perturbation_interval=2)
        self.script = dict(script)

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        if (trial_id, epoch) in self.script:
            source, params = self.script[(trial_id, epoch)]
            return Exploit(source_trial_id=source, new_params=params)
        return Decision.CONTINUE


def space_of() -> SearchSpace:
    return SearchSpace.from_dict(SPACE)


def nested(params: dict[str, Any]) -> dict[str, Any]:
    return SearchSpace.from_dict(SPACE).overrides_from_params(params)


@pytest.fixture(scope="module")
def run(run_populations: Any) -> Any:
    """The four PARAMS trials as one population on digits; the finished trials, by number."""

    def run(tmp_path: Any, base: Any, scheduler: Any, *, name: str, **kwargs: Any) -> list[Any]:
        spec, evaluator = base
        study = run_populations(
            tmp_path,
            kwargs.pop("spec", spec),
            evaluator,
            kwargs.pop("space", SPACE),
            name=name,
            enqueue=kwargs.pop("enqueue", PARAMS),
            scheduler=scheduler,
            population_size=4,
            n_trials=4,
            **kwargs,
        )
        trials = study.get_trials(deepcopy=False)
        assert len({t.user_attrs["population"] for t in trials}) == 1
        return sorted(trials, key=lambda t: t.number)

    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory: Any, base: Any, run: Any) -> list[Any]:
    """The four trials as one population without PBT."""
    return run(tmp_path_factory.mktemp("reference"), base, NoScheduler(), name="reference")


def curve(trial: Any) -> list[float]:
    return [trial.intermediate_values[e] for e in sorted(trial.intermediate_values)]


# ----------------------------------------------------------------------------------- SpecPopulation level


def _population(base: Any, trains: list[Any], models: list[Any], **kwargs: Any) -> SpecPopulation:
    bundle = base[1].bundle(None)
    return SpecPopulation(
        models,
        trains,
        input_shape=tuple(bundle.input_shape),
        output_dim=10,
        task=bundle.task,
        n_classes=bundle.n_classes,
        **kwargs,
    )


def _member_state(population: SpecPopulation, k: int) -> list[torch.Tensor]:
    """Everything member ``k`` carries: parameters, buffers (but dropout rates, which are hyperparameters)
    and optimizer state: one slice of each."""
    pop = population.trainer.population
    tensors = [p[k].clone() for p in pop.parameters()]
    tensors += [b[k].clone() for name, b in pop.named_buffers() if b.dim() >= 1 and not name.endswith("rate")]
    optimizer = population.trainer.optimizer
    groups = [optimizer.decayed, optimizer.others] if hasattr(optimizer, "decayed") else [optimizer]
    for group in groups:
        tensors += [value[k].clone() for state in group.state for value in state.values()]
        tensors.append(group.step_count[k].clone())
    return tensors


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_exploit_copies_the_source_and_set_member_applies_the_explored_values(base):
    """After exploit(0 -> 2) member 2 carries exactly member 0's weights, BatchNorm buffers, Adam moments,
    step count and early-stopping state; set_member then gives it new per-member values (lr, weight decay,
    label smoothing, clip norm, dropout), which the optimizer and trainer hold from the next step on."""
    spec = base[0]
    bundle = base[1].bundle(None)
    model = spec.model.model_copy(update={"batch_norm": True})
    models = [model.model_copy(update={"dropout": d}) for d in (0.1, 0.2, 0.0)]
    stopping = parse_spec({**BASE, "train": {"early_stopping": {"patience": 5}}}).train
    trains = [stopping.model_copy(update={"lr": lr}) for lr in (0.01, 0.003, 0.001)]
    population = _population(base, trains, models, mutable=("train.weight_decay", "model.dropout"))
    x, y = bundle.X_train, bundle.y_train
    for _ in range(2):
        population.train_epoch(x, y)
        population.end_epoch(population.evaluate(bundle.X_val, bundle.y_val))
    member_1 = _member_state(population, 1)
    assert not _same(_member_state(population, 0), _member_state(population, 2))

    population.exploit(0, 2)
    assert _same(_member_state(population, 2), _member_state(population, 0))
    assert population.trackers[2].state == population.trackers[0].state
    assert population.trackers[2] is not population.trackers[0]  # a copy: member 0's goes on alone
    explored = trains[0].model_copy(
        update={"lr": 0.012, "weight_decay": 1e-3, "label_smoothing": 0.1, "grad_clip": 2.0}
    )
    population.set_member(2, models[0].model_copy(update={"dropout": 0.3}), explored)

    hparams = population.trainer.hparams
    assert hparams["lr"][2].item() == pytest.approx(0.012)  # constant schedule: the rate itself
    assert hparams["weight_decay"][2].item() == pytest.approx(1e-3)
    assert hparams["label_smoothing"][2].item() == pytest.approx(0.1)
    assert hparams["clip_norm"][2].item() == pytest.approx(2.0)
    assert hparams["dropout"][2].item() == pytest.approx(0.3)
    assert hparams["lr"][0].item() == pytest.approx(0.01)  # the source keeps its own
    assert hparams["dropout"][0].item() == pytest.approx(0.1)
    assert population.trains[2] is explored
    assert _same(_member_state(population, 2), _member_state(population, 0))  # set_member moved no weight
    assert _same(_member_state(population, 1), member_1)  # the bystander was not touched
    # The explored rate is what the next epoch trains with (train_epoch sets it from the member's spec).
    population.train_epoch(x, y)
    assert population.trainer.hparams["lr"][2].item() == pytest.approx(0.012)


def test_an_exploit_leaves_the_other_members_on_their_own_trajectory(base):
    """Two identical populations; in one, member 2 copies member 0 after an epoch and gets a new lr. Members 0
    and 1 then train on bit for bit as in the population where nothing happened (dropout included: a
    member's masks do not depend on another member's rate)."""
    spec = base[0]
    bundle = base[1].bundle(None)
    models = [spec.model.model_copy(update={"dropout": d}) for d in (0.1, 0.2, 0.05)]
    trains = [spec.train.model_copy(update={"lr": lr}) for lr in (0.01, 0.003, 0.001)]
    populations = [_population(base, trains, models, mutable=("model.dropout",)) for _ in range(2)]
    x, y = bundle.X_train, bundle.y_train
    for population in populations:
        population.train_epoch(x, y)
    populations[1].exploit(0, 2)
    populations[1].set_member(
        2, models[0].model_copy(update={"dropout": 0.3}), trains[0].model_copy(update={"lr": 0.02})
    )
    for population in populations:
        population.train_epoch(x, y)
    for k in (0, 1):
        assert _same(_member_state(populations[0], k), _member_state(populations[1], k))
    assert not _same(_member_state(populations[0], 2), _member_state(populations[1], 2))


def test_set_member_refuses_what_the_population_was_not_built_for(base):
    spec = base[0]
    trains = [spec.train.model_copy(update={"lr": lr}) for lr in (0.01, 0.003)]
    population = _population(base, trains, [spec.model, spec.model])  # no decay, no dropout, nothing mutable
    with pytest.raises(SpecError, match="weight_decay"):
        population.set_member(1, spec.model, trains[1].model_copy(update={"weight_decay": 1e-3}))
    with pytest.raises(SpecError, match="Dropout modules"):
        population.set_member(1, spec.model.model_copy(update={"dropout": 0.2}), trains[1])
    with pytest.raises(SpecError, match="batch_size"):
        population.set_member(1, spec.model, trains[1].model_copy(update={"batch_size": 32}))
    with pytest.raises(SpecError, match="structure"):
        population.set_member(1, spec.model.model_copy(update={"hidden": [8]}), trains[1])


# ----------------------------------------------------------------------------------- in the population study


def test_exploit_without_perturbation_makes_the_member_a_clone_of_its_source(tmp_path, base, run, reference):
    """Trial 1 copies trial 0 after epoch 2 and keeps trial 0's values: from then on the two are one model
    trained with one configuration, so trial 1 reports trial 0's values at epochs 3 and 4 (its own before).
    The trial records the exploit; the two members it did not involve train exactly as without it."""
    script = {(1, 2): (0, nested(PARAMS[0]))}
    trials = run(tmp_path, base, ScriptedPbt(space_of(), script), name="clone")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    zero, one = curve(trials[0]), curve(trials[1])
    assert one[:2] == curve(reference[1])[:2]  # its own reports up to the exploit
    assert one[2:] == pytest.approx(zero[2:], rel=1e-6)  # then the source's model, continued
    assert one[2:] != pytest.approx(curve(reference[1])[2:], rel=1e-3)
    assert trials[1].user_attrs["pbt_exploits"] == [{"epoch": 2, "source": 0, "params": nested(PARAMS[0])}]
    for k in (0, 2, 3):  # not involved (the source included): exactly as in the population without PBT
        assert curve(trials[k]) == curve(reference[k])
        assert "pbt_exploits" not in trials[k].user_attrs


def test_explored_values_train_the_copy_and_an_exploit_at_the_last_epoch_is_withdrawn(
    tmp_path, base, reference, monkeypatch, run
):
    """With a new lr the copy departs from its source after the exploit; the optimizer holds that lr for the
    member right after the exploit (seen through a spy on set_member), and the member's weights are then
    its source's. An exploit decided at the last epoch trains nothing, so it is taken off the record."""
    new = {"train": {"lr": 0.004, "weight_decay": 1e-3}}
    script = {(1, 2): (0, new), (2, 4): (0, nested(PARAMS[0]))}
    seen: list[dict[str, Any]] = []
    exploit, set_member = SpecPopulation.exploit, SpecPopulation.set_member

    def spy_exploit(self: SpecPopulation, src: int, dst: int) -> None:
        exploit(self, src, dst)
        seen.append({"src": src, "dst": dst})

    def spy_set_member(self: SpecPopulation, k: int, model: Any, train: Any) -> None:
        set_member(self, k, model, train)
        src = seen[-1]["src"]
        seen[-1].update(
            lr=self.trainer.optimizer.hparams["lr"][k].item(),
            weight_decay=self.trainer.optimizer.hparams["weight_decay"][k].item(),
            source_lr=self.trainer.optimizer.hparams["lr"][src].item(),
            same_weights=all(torch.equal(p[k], p[src]) for p in self.trainer.population.parameters()),
        )

    monkeypatch.setattr(SpecPopulation, "exploit", spy_exploit)
    monkeypatch.setattr(SpecPopulation, "set_member", spy_set_member)
    trials = run(tmp_path, base, ScriptedPbt(space_of(), script), name="explore")

    assert len(seen) == 1  # the epoch-4 exploit was not carried out
    assert seen[0]["dst"] != seen[0]["src"]
    assert seen[0]["lr"] == pytest.approx(0.004)
    assert seen[0]["weight_decay"] == pytest.approx(1e-3)
    assert seen[0]["source_lr"] == pytest.approx(0.01)
    assert seen[0]["same_weights"]
    assert trials[1].user_attrs["pbt_exploits"] == [{"epoch": 2, "source": 0, "params": new}]
    assert curve(trials[1])[2] != pytest.approx(curve(trials[0])[2], rel=1e-4)  # lr 0.004, not 0.01
    assert curve(trials[1])[2] != pytest.approx(curve(reference[1])[2], rel=1e-4)  # not its own weights
    assert trials[2].user_attrs["pbt_exploits"] == []  # recorded by the handle, then withdrawn
    assert curve(trials[2]) == curve(reference[2])


def test_real_pbt_copies_the_bottom_from_the_top_and_perturbs_by_its_rule(tmp_path, base, run):
    """The real scheduler in the loop: every second epoch the worst of four copies one of the best (as
    reported this epoch) with its lr and weight decay times 0.8 or 1.2; never at the last epoch."""
    spec = parse_spec({**BASE, "train": {**BASE["train"], "epochs": 6}})
    pbt = PbtScheduler(space_of(), perturbation_interval=2, resample_probability=0.0, seed=1)
    # Close learning rates, the slowest two last: reported in slot order, the slowest member's value would
    # be ranked against the next one's from the epoch before, which is worse still, and escape its copy.
    enqueue = [{"train.lr": lr, "train.weight_decay": 1e-5} for lr in (0.003, 0.002, 0.0011, 0.0012)]
    trials = run(tmp_path, base, pbt, name="real", spec=spec, enqueue=enqueue)
    by_number = {t.number: t for t in trials}
    exploits = [(t, e) for t in trials for e in t.user_attrs.get("pbt_exploits", [])]
    for epoch in (2, 4):  # the worst member at each exploit epoch copied (members report best first)
        at_epoch = {t.number: t.intermediate_values[epoch] for t in trials}
        worst = by_number[max(at_epoch, key=at_epoch.get)]
        assert epoch in [e["epoch"] for e in worst.user_attrs.get("pbt_exploits", [])]
    for trial, record in exploits:
        epoch, source = record["epoch"], by_number[record["source"]]
        assert epoch in (2, 4)
        assert source.number != trial.number
        # The copier was the worst of the four at that epoch, and its source the best.
        at_epoch = {t.number: t.intermediate_values[epoch] for t in trials}
        assert trial.number == max(at_epoch, key=at_epoch.get)
        assert source.number == min(at_epoch, key=at_epoch.get)
        # The source's values then (its own, or those of its latest earlier exploit), times 0.8 or 1.2
        # (clipped to the space).
        earlier = [e for e in source.user_attrs.get("pbt_exploits", []) if e["epoch"] < epoch]
        source_params = earlier[-1]["params"] if earlier else nested(source.params)
        for name in ("lr", "weight_decay"):
            low, high = SPACE[f"train.{name}"]["float"]
            value, before = record["params"]["train"][name], source_params["train"][name]
            assert any(value == pytest.approx(min(max(before * f, low), high)) for f in (0.8, 1.2))
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]  # it reported on, at the next epochs
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_pbt_populations_are_not_shrunk_by_a_time_budget(tmp_path, base, run):
    """At an assumed rate of one FLOP/s the time budget would shrink a population to a single member (see
    test_population_study); a PBT population keeps its configured size."""
    pbt = PbtScheduler(space_of(), perturbation_interval=2, seed=0)
    trials = run(tmp_path, base, pbt, name="sized", timeout_s=600.0, flop_rate=1.0)
    assert len(trials) == 4  # run() checked they trained as one population


@pytest.mark.parametrize(
    ("interval", "folds", "message"),
    [(2, [0, 1], "single split"), (1, [None], "2 or more")],
)
def test_pbt_settings_a_population_cannot_honour_are_refused(tmp_path, base, run, interval, folds, message):
    """Across folds every fold trains from scratch, so no copy could carry over; an exploit step every epoch
    would rank members before the others reported. Refused before any trial starts."""
    with pytest.raises(SpecError, match=message):
        run(
            tmp_path,
            base,
            PbtScheduler(space_of(), perturbation_interval=interval),
            name="refused",
            folds=folds,
        )
    queued = optuna.load_study(study_name="refused", storage=f"sqlite:///{tmp_path / 'refused.db'}").trials
    assert [t.state for t in queued] == [TrialState.WAITING] * 4  # the enqueued trials: none started
