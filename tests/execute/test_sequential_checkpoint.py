"""A sequential trial's checkpoints in an artifact store (issue #17): copied there every epoch as the trainer
writes them, read back by a retry on another worker (another run directory), removed when the trial ends.

Each test trains a trial straight through, then the same configuration interrupted by an exception raised
from a report (as a kill ends a worker: after the last checkpoint, the trial not ended), then a retry with the
user attributes a reclaiming worker gives it (``retry_of``, ``resume_from``), run by a new executor in a new
run directory, and compares what the retry reports with what the straight trial reported.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from tunelab.execute import Evaluator, SequentialExecutor
from tunelab.execute._search import checkpoint_prefix
from tunelab.search import NoScheduler, Outcome, TrialHandle
from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.storage import DatabaseArtifactStore

EPOCHS = 4
SPEC = {
    "name": "seq",
    "data": {"source": "iris", "split": {"method": "stratified_kfold", "n_folds": 2}},
    "model": {"type": "mlp", "hidden": [16], "dropout": 0.2},
    "train": {"epochs": EPOCHS, "batch_size": 16, "optimizer": "adam", "schedule": {"name": "cosine"}},
}
PARAMS = {"train": {"lr": 0.01}}


class KilledError(Exception):
    """Stands for the worker's death: raised from a report, it ends the trial's run without an outcome."""


@pytest.fixture(scope="module")
def base() -> tuple[ExperimentSpec, Evaluator]:
    spec = parse_spec(SPEC)
    return spec, Evaluator(spec, spec.data)


@pytest.fixture(params=["database", "directory"])
def store(request, tmp_path):
    """The default store, a table in the study's database (SQLite here), or a directory (``--artifacts``)."""
    if request.param == "directory":
        (tmp_path / "artifacts").mkdir()
        yield FileSystemArtifactStore(str(tmp_path / "artifacts"))
        return
    store = DatabaseArtifactStore(f"sqlite:///{tmp_path / 'a.db'}")
    yield store
    store.close()


class Trial:
    """A new trial of ``study`` with user attributes ``attrs``, recording its reports; the report at epoch
    ``kill_at`` raises :class:`KilledError`."""

    def __init__(self, study: optuna.Study, attrs: dict[str, Any] | None = None, kill_at: int | None = None):
        trial = study.ask()
        for key, value in (attrs or {}).items():
            trial.set_user_attr(key, value)
        self.number, self.kill_at = trial.number, kill_at
        self.reports: dict[int, float] = {}
        self.handle = TrialHandle(trial, PARAMS, scheduler=NoScheduler(), on_report=self._reported)

    def _reported(self, handle: TrialHandle, epoch: int, value: float) -> None:
        self.reports[epoch] = value
        if epoch == self.kill_at:
            raise KilledError


def run(base, trial: Trial, store: Any, run_dir) -> Outcome:
    """A new executor (a new worker, its own run directory) runs ``trial`` on both folds."""
    spec, evaluator = base
    executor = SequentialExecutor(
        spec,
        evaluator,
        metric="val_loss",
        run_dir=run_dir,
        folds=(0, 1),
        checkpoint_store=store,
        checkpoint_prefix=checkpoint_prefix("seq"),
    )
    executor.start(NoScheduler())
    return executor.run_trial(trial.handle)


def attrs_of(study: optuna.Study, number: int) -> dict[str, Any]:
    return study.get_trials(deepcopy=False)[number].user_attrs


def stored_folds(store: Any, root: str) -> list[int]:
    """The folds whose checkpoint the store holds under ``root``."""
    folds = []
    for fold in (0, 1):
        try:
            with store.open_reader(f"{root}:fold{fold}"):
                folds.append(fold)
        except ArtifactNotFound:
            pass
    return folds


@pytest.mark.parametrize("kill_at", [2, EPOCHS + 3])  # within the first fold; within the second
def test_a_retry_on_another_worker_continues_from_the_stored_checkpoint(base, store, tmp_path, kill_at):
    study = optuna.create_study()
    straight = Trial(study)
    expected = run(base, straight, store, tmp_path / "straight")
    assert expected.state == "complete"
    assert attrs_of(study, straight.number)["checkpoint"] == f"seq:trial-{straight.number}"
    assert stored_folds(store, f"seq:trial-{straight.number}") == []  # an ended trial leaves nothing there

    killed = Trial(study, kill_at=kill_at)
    with pytest.raises(KilledError):
        run(base, killed, store, tmp_path / "first-worker")
    root = attrs_of(study, killed.number)["checkpoint"]
    assert root == f"seq:trial-{killed.number}"
    # Kept for the retry: the folds begun (the first one complete when the kill came in the second).
    assert stored_folds(store, root) == ([0] if kill_at <= EPOCHS else [0, 1])
    # The killed trial reported epoch kill_at, whose checkpoint was not written yet: the retry resumes at the
    # epoch before and reports from kill_at on, on a worker that has none of the first worker's files.
    retry = Trial(study, attrs={"retry_of": killed.number, "resume_from": root})
    resumed = run(base, retry, store, tmp_path / "second-worker")
    assert attrs_of(study, retry.number)["resumed_at_epoch"] == kill_at - 1
    assert min(retry.reports) == kill_at
    assert retry.reports == {e: v for e, v in straight.reports.items() if e >= kill_at}
    assert resumed.state == "complete"
    assert resumed.values == expected.values
    assert dict(resumed.attrs) == dict(expected.attrs)  # fold_values and best_epochs
    assert attrs_of(study, retry.number)["checkpoint"] == root  # a reclaim of the retry hands it on
    assert stored_folds(store, root) == []
