"""What a study holds right now, for `tunelab status`: trials by state, the running ones, the retries, and
the artifact store's size; read from the storage alone (any machine that reaches it can ask)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from tunelab.errors import DataError
from tunelab.storage._artifacts import stored_artifacts
from tunelab.storage._leases import Lease, stored_leases
from tunelab.storage._urls import connected_storage, shown_url

__all__ = ["RunningTrial", "StudyStatus", "study_status"]


@dataclass(frozen=True)
class RunningTrial:
    number: int
    started: dt.datetime | None
    epochs: int  # the last epoch it reported (0: none yet)
    retry_of: int | None
    lease: Lease | None = None  # its worker, node and last heartbeat, in a distributed study


@dataclass(frozen=True)
class StudyStatus:
    """A study's state: ``states`` counts trials by state name (complete, pruned, fail, running, waiting);
    ``retries`` maps a retried trial's number to the trial it continues; ``artifacts``: the count and bytes
    in the artifact table, or None when the database has none; ``leases``: every trial's lease in a
    distributed study (None without a lease table), from which :attr:`workers` counts."""

    name: str
    url: str  # password hidden
    directions: list[str]
    states: dict[str, int]
    best: tuple[int, float] | None
    running: list[RunningTrial] = field(default_factory=list)
    retries: dict[int, int] = field(default_factory=dict)
    artifacts: tuple[int, int] | None = None
    leases: list[Lease] | None = None

    @property
    def workers(self) -> dict[str, tuple[str, int, float]]:
        """Per worker that held a lease: its node, the trials it holds now, and its last heartbeat's age."""
        seen: dict[str, tuple[str, int, float]] = {}
        for lease in self.leases or []:
            node, held, age = seen.get(lease.worker, (lease.node, 0, lease.age_s))
            live = lease.state in ("held", "telling")
            seen[lease.worker] = (node, held + live, min(age, lease.age_s))
        return seen

    @property
    def n_trials(self) -> int:
        return sum(self.states.values())


def study_status(url: str, name: str | None) -> StudyStatus:
    """The status of study ``name`` at ``url``; with no name, the storage's only study. A storage without
    that study (or with several and no name) is a :class:`DataError` listing the studies it holds."""
    with connected_storage(url) as storage:
        names = optuna.get_all_study_names(storage)
        if name is None:
            if len(names) != 1:
                held = ", ".join(sorted(names)) or "none"
                raise DataError(
                    f"{shown_url(url)} holds {len(names)} studies ({held}); name one with --study NAME."
                )
            name = names[0]
        if name not in names:
            held = ", ".join(sorted(names)) or "none"
            raise DataError(
                f"{shown_url(url)} holds no study named {name!r} (it holds: {held}). Check --study: it is "
                "the spec's name."
            )
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = {state.name.lower(): 0 for state in TrialState}
        for trial in trials:
            states[trial.state.name.lower()] += 1
        best = None
        if len(study.directions) == 1 and states["complete"]:
            winner = study.best_trial
            best = (winner.number, float(winner.value or 0.0))
        artifacts = stored_artifacts(storage.engine)
        leases = stored_leases(storage.engine, name)
    live = {lease.number: lease for lease in leases or [] if lease.state in ("held", "telling")}
    running = [
        RunningTrial(
            t.number,
            t.datetime_start,
            max(t.intermediate_values, default=0),
            t.user_attrs.get("retry_of"),
            live.get(t.number),
        )
        for t in trials
        if t.state == TrialState.RUNNING
    ]
    retries = {t.number: int(t.user_attrs["retry_of"]) for t in trials if "retry_of" in t.user_attrs}
    return StudyStatus(
        name=name,
        url=shown_url(url),
        directions=[d.name.lower() for d in study.directions],
        states=states,
        best=best,
        running=running,
        retries=retries,
        artifacts=artifacts,
        leases=leases,
    )
