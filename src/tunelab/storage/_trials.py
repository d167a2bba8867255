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
    The study loop adds to its own as trials end (:meth:`add`)."""

    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    n_epochs: int = 0

    @property
    def n_finished(self) -> int:
        return self.n_complete + self.n_pruned + self.n_failed

    @classmethod
    def of(cls, trials: Iterable[FrozenTrial]) -> StudyCounts:
        """The counts of ``trials`` (unfinished ones are not counted)."""
        states = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        n_epochs = 0
        for trial in trials:
            if trial.state in states:
                states[trial.state] += 1
                n_epochs += max(trial.intermediate_values, default=0)
        return cls(states[TrialState.COMPLETE], states[TrialState.PRUNED], states[TrialState.FAIL], n_epochs)

    @classmethod
    def of_study(cls, study: optuna.Study) -> StudyCounts:
        return cls.of(study.get_trials(deepcopy=False, states=FINISHED))

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
    (the interrupted trial's number), which continues from the interrupted trial's checkpoint if it has one.
    Returns the numbers of the interrupted trials.

    Only for a study no process is running: a trial RUNNING in a live worker would be run twice.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    storage = study._storage
    for trial in stale:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return [trial.number for trial in stale]
