"""What the storage says about a study's trials: how many ended how, and the repair of interrupted ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["FINISHED", "INTERRUPTED", "StudyCounts", "retry_interrupted"]

INTERRUPTED = "interrupted: the trial was running when the previous run of this study stopped"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class StudyCounts:
    """Finished trials by how they ended, and the epochs they reported (a trial's epochs: its last report).
    An interrupted trial that was queued again (another trial's ``retry_of``) is not counted: its retry
    stands for it, so ``n_trials`` budgets count configurations; nor is a trial that never started
    (``never_started``: created during a database outage, :func:`~tunelab.storage.fail_orphans`). The study
    loop adds to its own as trials end (:meth:`add`)."""

    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    n_epochs: int = 0

    @property
    def n_finished(self) -> int:
        return self.n_complete + self.n_pruned + self.n_failed

    @classmethod
    def of(cls, trials: Iterable[FrozenTrial]) -> StudyCounts:
        """The counts of ``trials`` (unfinished ones, and retried ones among them, are not counted)."""
        trials = list(trials)
        retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
        states = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        n_epochs = 0
        for trial in trials:
            if (
                trial.state in states
                and trial.number not in retried
                and "never_started" not in trial.user_attrs
            ):
                states[trial.state] += 1
                n_epochs += max(trial.intermediate_values, default=0)
        return cls(states[TrialState.COMPLETE], states[TrialState.PRUNED], states[TrialState.FAIL], n_epochs)

    @classmethod
    def of_study(cls, study: optuna.Study) -> StudyCounts:
        return cls.of(study.get_trials(deepcopy=False))

    def add(self, state: str, epochs: int) -> None:
        """One more trial, ended ``state`` (complete, pruned, failed) after ``epochs``."""
        if state == "complete":
            self.n_complete += 1
        elif state == "pruned":
            self.n_pruned += 1
        else:
            self.n_failed += 1
        self.n_epochs += epochs


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a run that was killed: mark each FAIL (user attribute ``fail_reason``:
    :data:`INTERRUPTED`) and queue its parameters again as a new trial with the user attribute ``retry_of``
    (the interrupted trial's number; and ``retries``, ``resume_from``: the checkpoint its executor recorded as
    ``checkpoint``), which continues from the interrupted trial's checkpoint if it has one.
    Returns the numbers of the interrupted trials.

    Only for a study no process is running: a trial RUNNING in a live worker would be run twice.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    storage = study._storage
    for trial in stale:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(
            trial.params,
            user_attrs={
                "retry_of": trial.number,
                "retries": int(trial.user_attrs.get("retries", 0)) + 1,
                "resume_from": trial.user_attrs.get("checkpoint"),
            },
        )
    return [trial.number for trial in stale]
