"""A fused population's checkpoint every epoch in an artifact store, and a pack of retries resuming from it.

Each test trains a pack straight through, then the same pack interrupted by an exception raised from a
report (as a kill would end it: after the last checkpoint, nothing ended), then a pack of new trials that
retry the interrupted ones (``retry_of`` / ``resume_from`` user attributes, as the reclaiming worker enqueues
them) with a new executor, and compares what the retries report with what the straight pack reported.
"""

from __future__ import annotations

import io
import math
import pickletools
import re
import zipfile
from collections.abc import Sequence
from functools import partial
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from tunelab.execute import Evaluator, PopulationExecutor, trial_spec
from tunelab.search import Decision, NoScheduler, Outcome, PbtScheduler, SearchSpace, TrialHandle
from tunelab.search.schedulers import SchedulerDecision
from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.storage import DatabaseArtifactStore

BASE = {
    "name": "ckpt",
    "data": {"source": "iris"},
    "model": {"type": "mlp", "hidden": [16]},
    "train": {
        "epochs": 5,
        "batch_size": 16,
        "optimizer": "adam",
        "schedule": {"name": "cosine"},
        # Improvements count from 0.15 on: the members' best epochs are 4, 2 and 3, and the second stops after
        # two epochs without one (epoch 4). Where they stop and what they end with depends on their
        # early-stopping progress before the interruption.
        "early_stopping": {"monitor": "val_loss", "patience": 2, "min_delta": 0.15, "restore_best": True},
    },
}
# Three members of one structure, each with its own lr, dropout and (one of them) weight decay.
PARAMS = [
    {"train": {"lr": 0.01}, "model": {"dropout": 0.2}},
    {"train": {"lr": 0.03, "weight_decay": 1e-3}, "model": {"dropout": 0.1}},
    {"train": {"lr": 0.005}, "model": {"dropout": 0.3}},
]


class KilledError(Exception):
    """Stands for the worker's death: raised from a report, it ends the pack without ending a trial."""


@pytest.fixture(autouse=True)
def _no_dropout_leak():
    """Resuming restores the population's own streams; torch's global generator is not one of them."""
    before = torch.random.get_rng_state()
    yield
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.fixture(scope="module")
def base() -> tuple[ExperimentSpec, Evaluator]:
    spec = parse_spec(BASE)
    return spec, Evaluator(spec, spec.data)


@pytest.fixture(scope="module")
def folded() -> tuple[ExperimentSpec, Evaluator]:
    """Two folds of 4 epochs each, with the plateau schedule (its state is part of the checkpoint)."""
    spec = parse_spec(
        {
            **BASE,
            "train": {**BASE["train"], "epochs": 4, "schedule": {"name": "plateau", "patience": 0}},
        }
    )
    split = spec.data.split.model_copy(update={"method": "stratified_kfold", "n_folds": 2})
    return spec, Evaluator(spec, spec.data.model_copy(update={"split": split}))


@pytest.fixture
def store(tmp_path):
    """The production store: a table in a SQLite database."""
    store = DatabaseArtifactStore(f"sqlite:///{tmp_path / 'a.db'}")
    yield store
    store.close()


class Pack:
    """Handles of new trials of ``study`` for ``params``, each with ``attrs`` (user attributes), recording
    their reports; a report at handle epoch ``kill_at`` raises :class:`KilledError`."""

    def __init__(
        self,
        study: optuna.Study,
        params: Sequence[dict[str, Any]],
        *,
        attrs: Sequence[dict[str, Any]] | None = None,
        kill_at: int | None = None,
    ) -> None:
        self.kill_at = kill_at
        self.reports: dict[int, dict[int, float]] = {}
        self.handles = []
        for index, member in enumerate(params):
            trial = study.ask()
            for key, value in (attrs[index] if attrs else {}).items():
                trial.set_user_attr(key, value)
            self.reports[trial.number] = {}
            self.handles.append(TrialHandle(trial, member, scheduler=NoScheduler(), on_report=self._reported))

    def _reported(self, handle: TrialHandle, epoch: int, value: float) -> None:
        self.reports[handle.number][epoch] = value
        if epoch == self.kill_at:
            raise KilledError

    def member_reports(self) -> list[dict[int, float]]:
        return [self.reports[handle.number] for handle in self.handles]

    @property
    def numbers(self) -> list[int]:
        return [handle.number for handle in self.handles]


def train(
    base: tuple[ExperimentSpec, Evaluator],
    pack: Pack,
    store: Any,
    *,
    folds: Sequence[int | None] = (None,),
    prefix: str = "",
) -> list[Outcome]:
    """A new executor (a new worker) trains ``pack``."""
    spec, evaluator = base
    executor = PopulationExecutor(
        partial(trial_spec, spec),
        evaluator,
        population_size=len(pack.handles),
        metric="val_loss",
        folds=folds,
        checkpoint_store=store,
        checkpoint_prefix=prefix,
    )
    executor.start(NoScheduler())
    return executor.run(pack.handles)


def retries(study: optuna.Study, interrupted: Pack, members: Sequence[int], params: Sequence[dict]) -> Pack:
    """New trials retrying ``interrupted``'s members ``members``, with the user attributes a reclaiming
    worker gives them: ``retry_of`` the original's number, ``resume_from`` its ``checkpoint`` attribute."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    attrs = [
        {
            "retry_of": interrupted.numbers[k],
            "resume_from": trials[interrupted.numbers[k]].user_attrs["checkpoint"],
        }
        for k in members
    ]
    return Pack(study, [params[k] for k in members], attrs=attrs)


def read(store: Any, artifact_id: str) -> dict[str, Any]:
    with store.open_reader(artifact_id) as reader:
        return torch.load(io.BytesIO(reader.read()), weights_only=True)


def same_outcome(resumed: Outcome, straight: Outcome) -> None:
    assert resumed.state == straight.state == "complete"
    assert resumed.values == straight.values
    assert dict(resumed.attrs) == dict(straight.attrs)  # fold_values and best_epochs


def test_a_population_interrupted_after_epoch_2_resumes_exactly_where_it_stopped(base, store):
    straight = Pack(optuna.create_study(), PARAMS)
    expected = train(base, straight, store)
    study = optuna.create_study()
    interrupted = Pack(study, PARAMS, kill_at=3)  # killed during epoch 3: its last checkpoint is epoch 2's
    with pytest.raises(KilledError):
        train(base, interrupted, store)
    assert not any(handle.ended for handle in interrupted.handles)
    checkpoint = read(store, "population-0")
    assert (checkpoint["fold_index"], checkpoint["epoch"]) == (0, 2)
    assert [slot["trial"] for slot in checkpoint["slots"]] == interrupted.numbers

    resumed = retries(study, interrupted, [0, 1, 2], PARAMS)
    outcomes = train(base, resumed, store)

    assert [max(reports) for reports in straight.member_reports()] == [5, 4, 5]
    assert [outcome.attrs["best_epochs"] for outcome in expected] == [[4], [2], [3]]
    for k, reports in enumerate(resumed.member_reports()):
        assert min(reports) == 3  # the first new report is the checkpoint's epoch + 1
        # Exactly: the same operations on the same values, in the same order (one thread, the CPU).
        assert reports == {e: v for e, v in straight.member_reports()[k].items() if e >= 3}
        before = interrupted.member_reports()[k]  # epochs 1 and 2 (and 3 for the member that raised)
        assert {1, 2} <= set(before)
        assert before.items() <= straight.member_reports()[k].items()
        same_outcome(outcomes[k], expected[k])
    # The retries checkpointed under their own pack's id, which is gone now that the pack is over; so is the
    # checkpoint they resumed from, which held no other member.
    for handle in resumed.handles:
        assert study.trials[handle.number].user_attrs["checkpoint"] == f"population-{resumed.numbers[0]}"
    for artifact in ("population-0", f"population-{resumed.numbers[0]}"):
        with pytest.raises(ArtifactNotFound):
            store.open_reader(artifact)


def test_retries_killed_before_their_first_epoch_ended_are_retried_from_their_own_checkpoint(base, store):
    """A pack of retries writes its checkpoint as soon as it has loaded the one it resumes from, so a second
    kill, within the first epoch it trains, leaves a checkpoint naming its trials."""
    straight = Pack(optuna.create_study(), PARAMS)
    expected = train(base, straight, store)
    study = optuna.create_study()
    first = Pack(study, PARAMS, kill_at=3)
    with pytest.raises(KilledError):
        train(base, first, store)
    second = retries(study, first, [0, 1, 2], PARAMS)
    second.kill_at = 3
    with pytest.raises(KilledError):
        train(base, second, store)
    checkpoint = read(store, f"population-{second.numbers[0]}")
    assert (checkpoint["fold_index"], checkpoint["epoch"]) == (0, 2)
    assert [slot["trial"] for slot in checkpoint["slots"]] == second.numbers

    third = retries(study, second, [0, 1, 2], PARAMS)
    outcomes = train(base, third, store)
    for k, reports in enumerate(third.member_reports()):
        assert reports == {e: v for e, v in straight.member_reports()[k].items() if e >= 3}
        same_outcome(outcomes[k], expected[k])


def test_cross_validation_resumes_in_the_fold_it_was_interrupted_in(folded, store):
    """Killed in fold 2 (within its last epoch): the retries continue in fold 2 after its epoch 3, with fold
    1's value kept, and end with the straight pack's fold values. The third member's rate is high enough
    that its loss rose in fold 2's epoch 3: the plateau schedule had cut its rate for epoch 4."""
    folds = [0, 1]
    params = [*PARAMS[:2], {"train": {"lr": 0.5}, "model": {"dropout": 0.3}}]
    straight = Pack(optuna.create_study(), params)
    expected = train(folded, straight, store, folds=folds)
    third = straight.member_reports()[2]
    assert third[7] > third[6]  # a plateau: the rate of fold 2's epoch 4 is a tenth of its epoch 3's
    study = optuna.create_study()
    interrupted = Pack(study, params, kill_at=8)  # fold 2's epoch 4 (offset 4)
    with pytest.raises(KilledError):
        train(folded, interrupted, store, folds=folds)
    checkpoint = read(store, "population-0")
    assert (checkpoint["fold_index"], checkpoint["epoch"]) == (1, 3)
    for slot, outcome in zip(checkpoint["slots"], expected, strict=True):
        assert slot["fold_values"] == outcome.attrs["fold_values"][:1]  # fold 1's, kept
    assert checkpoint["slots"][2]["state"]["plateau"]["n_reductions"] == 1

    resumed = retries(study, interrupted, [0, 1, 2], params)
    outcomes = train(folded, resumed, store, folds=folds)

    for k, reports in enumerate(resumed.member_reports()):
        assert reports == {8: straight.member_reports()[k][8]}
        assert len(outcomes[k].attrs["fold_values"]) == 2
        same_outcome(outcomes[k], expected[k])


def test_a_resumed_subset_of_the_members_continues_as_they_would_have(base, store):
    """Two of three members retried: they continue exactly. They have no dropout (the members' masks are
    slices of one draw, so two members draw other masks than three: SpecPopulation.state), but the third
    had dropout and weight decay, so the population is rebuilt with its Dropout modules and decay groups."""
    params = [
        {"train": {"lr": 0.01}, "model": {"dropout": 0.0}},
        {"train": {"lr": 0.03}, "model": {"dropout": 0.0}},
        {"train": {"lr": 0.005, "weight_decay": 1e-3}, "model": {"dropout": 0.3}},
    ]
    straight = Pack(optuna.create_study(), params)
    expected = train(base, straight, store)
    study = optuna.create_study()
    interrupted = Pack(study, params, kill_at=4)
    with pytest.raises(KilledError):
        train(base, interrupted, store)
    structure = read(store, "population-0")["population"]["structure"]
    assert structure == {"dropout_modules": True, "decay_groups": True}

    resumed = retries(study, interrupted, [0, 1], params)
    outcomes = train(base, resumed, store)

    for k, reports in zip([0, 1], resumed.member_reports(), strict=True):
        assert min(reports) == 4
        assert reports == {e: v for e, v in straight.member_reports()[k].items() if e >= 4}
    for k, outcome in zip([0, 1], outcomes, strict=True):
        same_outcome(outcome, expected[k])
    # The checkpoint resumed from stays for the third member's retry, which another pack may take.
    assert [slot["trial"] for slot in read(store, "population-0")["slots"]] == interrupted.numbers


def test_every_trial_names_the_checkpoint_which_is_removed_when_the_pack_ends(base, tmp_path):
    """Also with Optuna's own file-system store, and a prefix per study."""
    (tmp_path / "artifacts").mkdir()
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    written: list[tuple[str, int]] = []

    class Watched:
        def write(self, artifact_id, content_body):
            data = content_body.read()
            written.append((artifact_id, read_bytes(data)["epoch"]))
            store.write(artifact_id, io.BytesIO(data))

        def open_reader(self, artifact_id):
            return store.open_reader(artifact_id)

        def remove(self, artifact_id):
            store.remove(artifact_id)

    study = optuna.create_study()
    pack = Pack(study, PARAMS)
    train(base, pack, Watched(), prefix="s1-")
    assert written == [("s1-population-0", epoch) for epoch in (1, 2, 3, 4)]  # none after the last epoch
    for trial in study.get_trials(deepcopy=False):
        assert trial.user_attrs["checkpoint"] == "s1-population-0"
    with pytest.raises(ArtifactNotFound):
        store.open_reader("s1-population-0")
    assert list((tmp_path / "artifacts").iterdir()) == []


def read_bytes(data: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), weights_only=True)


def test_the_checkpoint_holds_only_tensors_and_plain_values(base, store):
    """What ``torch.load(..., weights_only=True)`` reads (the executor reads it that way): no pickled objects,
    and every member tensor is a slice of its own (not a view that would save the population's storage)."""
    study = optuna.create_study()
    pack = Pack(study, PARAMS, kill_at=2)
    with pytest.raises(KilledError):
        train(base, pack, store)
    with store.open_reader("population-0") as reader:
        data = reader.read()
    checkpoint = read_bytes(data)

    def leaves(value: Any) -> list[Any]:
        if isinstance(value, dict):
            assert all(isinstance(key, str | int) for key in value)
            return [leaf for item in value.values() for leaf in leaves(item)]
        if isinstance(value, list):
            return [leaf for item in value for leaf in leaves(item)]
        return [value]

    found = leaves(checkpoint)
    assert all(
        value is None or isinstance(value, torch.Tensor | bool | int | float | str) for value in found
    ), {type(value) for value in found}
    assert {"format", "fold_index", "epoch", "population", "slots"} <= set(checkpoint)
    slot = checkpoint["slots"][0]
    assert set(slot) == {"trial", "values", "fold_values", "best_epochs", "state"}
    assert sorted(slot["values"]) == [1]
    weight = slot["state"]["trainer"]["population"]["layers.1.weight"]  # member 0's first layer, [4, 16]
    assert weight.shape == (4, 16)
    assert weight.untyped_storage().nbytes() == weight.numel() * weight.element_size()
    tracker = slot["state"]["tracker"]
    assert set(tracker) == {"best", "best_epoch", "n_bad_epochs"}
    assert math.isfinite(tracker["best"])
    # The pickle inside torch's zip names nothing but torch's tensor rebuilding (with its empty OrderedDict of
    # backward hooks) and storages.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        pickled = archive.read(name)
    names = {str(arg) for op, arg, _ in pickletools.genops(pickled) if op.name == "GLOBAL"}
    rebuilding = {"torch._utils _rebuild_tensor_v2", "collections OrderedDict"}
    assert "torch._utils _rebuild_tensor_v2" in names  # torch.save's protocol 2 names globals with GLOBAL
    assert all(n in rebuilding or re.fullmatch(r"torch [A-Za-z]+Storage", n) for n in names), names


@pytest.mark.parametrize(
    ("resume_from", "retry_of"),
    [("population-99", None), (None, 99)],
    ids=["missing-artifact", "not-in-checkpoint"],
)
def test_without_a_checkpoint_that_holds_them_the_retries_train_from_scratch(
    base, store, resume_from: str | None, retry_of: int | None
):
    straight = Pack(optuna.create_study(), PARAMS)
    expected = train(base, straight, store)
    study = optuna.create_study()
    interrupted = Pack(study, PARAMS, kill_at=3)
    with pytest.raises(KilledError):
        train(base, interrupted, store)
    attrs: list[dict[str, Any]] = []
    for number in interrupted.numbers:
        attrs.append(
            {
                "retry_of": number if retry_of is None else retry_of + number,
                "resume_from": resume_from or study.trials[number].user_attrs["checkpoint"],
            }
        )
    resumed = Pack(study, PARAMS, attrs=attrs)
    outcomes = train(base, resumed, store)
    assert resumed.member_reports() == straight.member_reports()  # from epoch 1, as the straight pack
    for outcome, straight_outcome in zip(outcomes, expected, strict=True):
        same_outcome(outcome, straight_outcome)


class StillPbt(PbtScheduler):
    """PBT that never exploits: the population is a PBT population, trained as PBT's are."""

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        return Decision.CONTINUE


def test_under_pbt_the_population_checkpoints_but_its_retries_train_from_scratch(base, store):
    """PBT's exploits change members' configurations, which their retries' parameters do not hold."""
    space = SearchSpace.from_dict({"train.lr": {"float": [1e-3, 1e-1], "log": True}})
    spec, evaluator = base
    params = [{"train": {"lr": lr}} for lr in (0.01, 0.03, 0.005)]

    def train_pbt(pack: Pack) -> list[Outcome]:
        executor = PopulationExecutor(
            partial(trial_spec, spec), evaluator, 3, metric="val_loss", checkpoint_store=store
        )
        executor.start(StillPbt(space, perturbation_interval=2))
        return executor.run(pack.handles)

    study = optuna.create_study()
    interrupted = Pack(study, params, kill_at=3)
    with pytest.raises(KilledError):
        train_pbt(interrupted)
    assert read(store, "population-0")["epoch"] == 2
    resumed = retries(study, interrupted, [0, 1, 2], params)
    outcomes = train_pbt(resumed)
    assert [min(reports) for reports in resumed.member_reports()] == [1, 1, 1]
    assert [outcome.state for outcome in outcomes] == ["complete"] * 3
