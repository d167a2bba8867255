"""Issue #17, must-show 1 and 6: a node of a 3-node local Ray cluster is removed without warning mid-study;
every one of the 24 trials still finishes exactly once, each interrupted trial is retried once from its
population's checkpoint (its first new report at the checkpoint's epoch + 1), with the checkpoints in the
PostgreSQL study database and no shared directory; every listening socket is on loopback, and a driver
without the cluster's token cannot join."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState
from tests._ray import listening_sockets, ray_cluster, worker_node, write_table

from tunelab.execute import RayBackend
from tunelab.spec import parse_spec
from tunelab.storage import DatabaseArtifactStore, LeaseBook, StudyDatabase
from tunelab.tune import tune_experiment

pytestmark = pytest.mark.ray

# Ten epochs: a population checkpointed at epoch 2 still has seconds of training left when its node goes
# (with six, on a fast machine, it could finish between the check and the kill, and nothing was interrupted).
N_TRIALS, EPOCHS, POPULATION = 24, 10, 4


def _spec(table) -> object:
    return parse_spec(
        {
            "name": "node-killed",
            "seed": 0,
            "data": {"source": str(table), "target": "label"},
            "model": {"type": "mlp", "hidden": [256, 256]},
            "train": {"epochs": EPOCHS, "batch_size": 64, "lr": 1e-3},
            "search": {
                "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
                "n_trials": N_TRIALS,
                "scheduler": {"name": "none"},
                "fused": "on",
                "population_size": POPULATION,
                "top_k": 1,
                "n_seeds": 1,
                "refit": True,
                "ensemble": False,
            },
        }
    )


class _NodeKiller(threading.Thread):
    """Watches the study; once a population has checkpointed epoch 2, removes the node its worker runs on
    (no warning: its raylet and workers are killed), and records that checkpoint's epoch per trial."""

    def __init__(self, cluster, url: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.url = cluster, url
        self.killed_node: str | None = None
        self.checkpoint_epoch: dict[int, int] = {}  # trial number -> the epoch its checkpoint held
        self.sockets: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as error:  # reported by the test
            self.error = error

    def _watch(self) -> None:
        database = StudyDatabase(self.url)
        store = DatabaseArtifactStore(database)
        book = LeaseBook(database, study="node-killed", worker="watcher", node="test")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            for lease in book.leases(states=("held",)):
                if not self.sockets:  # while the study runs; taken before the kill, which then comes sooner
                    self.sockets = listening_sockets()
                checkpoint = _checkpoint_of(self.url, lease.number, store)
                if checkpoint is None or checkpoint["epoch"] < 2:
                    continue
                self.cluster.remove_node(worker_node(self.cluster, lease.node), allow_graceful=False)
                self.killed_node = lease.node
                after = _checkpoint_of(self.url, lease.number, store)  # nobody writes it any more
                for slot in (after or checkpoint)["slots"]:
                    self.checkpoint_epoch[int(slot["trial"])] = int((after or checkpoint)["epoch"])
                database.close()
                return
            time.sleep(0.05)
        database.close()
        raise TimeoutError("no population checkpointed epoch 2 within 240 s")


def _checkpoint_of(url: str, number: int, store: DatabaseArtifactStore) -> dict | None:
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name="node-killed", storage=storage)
        (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        artifact = trial.user_attrs.get("checkpoint")
    finally:
        storage.engine.dispose()
    if artifact is None:
        return None
    try:
        content = store.open_reader(artifact).read()
    except optuna.artifacts.exceptions.ArtifactNotFound:
        return None
    return torch.load(io.BytesIO(content), weights_only=True)


def test_a_node_removed_mid_study_loses_no_trial(tmp_path, postgres_url):
    table = write_table(tmp_path / "table.csv")
    with ray_cluster(worker_nodes=2, cpus_per_node=1) as cluster:
        killer = _NodeKiller(cluster, postgres_url)
        killer.start()
        result = tune_experiment(
            _spec(table),
            out_dir=tmp_path / "run",
            storage=postgres_url,
            backend=RayBackend(address=cluster.address, max_failures=3),
        )
        killer.join(timeout=5)
        assert killer.error is None, killer.error
        # Must-show 6: only loopback listens, and a driver without the token is refused.
        assert killer.sockets
        loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
        assert [a for a in killer.sockets if not a.startswith(loopback)] == [], killer.sockets
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        intruder = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address={cluster.address!r}); print('joined')"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert intruder.returncode != 0
        assert "joined" not in intruder.stdout
        assert "AuthenticationError" in intruder.stderr

    assert killer.killed_node is not None
    assert killer.checkpoint_epoch
    storage = optuna.storages.RDBStorage(postgres_url)
    trials = optuna.load_study(study_name="node-killed", storage=storage).get_trials()
    storage.engine.dispose()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    # A trial the killed worker had asked for but not started yet (no lease) is failed as never started,
    # not retried and not counted.
    never = {t.number for t in trials if "never_started" in t.user_attrs}
    assert all(t.state == TrialState.FAIL for t in trials if t.number in never)
    interrupted = {t.number for t in trials if t.state == TrialState.FAIL} - never
    # Each interrupted trial was retried exactly once, and every configuration completed exactly once.
    assert interrupted == set(retries) == set(killer.checkpoint_epoch), [
        (t.number, t.state.name, sorted(t.user_attrs)) for t in trials
    ]
    configurations = [
        t.user_attrs.get("retry_of", t.number) for t in trials if t.state == TrialState.COMPLETE
    ]
    # (a retry's number is the next free one when it was queued; its configuration is its original's)
    table = [(t.number, t.state.name, t.user_attrs.get("retry_of")) for t in trials]
    assert len(configurations) == len(set(configurations)) == N_TRIALS, table
    assert len(trials) == N_TRIALS + len(retries) + len(never), table
    for original, retry in retries.items():
        assert retry.state == TrialState.COMPLETE
        assert retry.user_attrs["retries"] == 1
        # It continued from its population's last checkpoint: the one of epoch 2 the node was removed after,
        # or a later one written while the node's processes were dying; never from scratch.
        resumed_at = retry.user_attrs["resumed_at_epoch"]
        assert resumed_at >= killer.checkpoint_epoch[original] >= 2
        assert min(retry.intermediate_values) == resumed_at + 1
        assert max(retry.intermediate_values) == EPOCHS
        assert retry.params == next(t.params for t in trials if t.number == original)
    assert result.summary["trials"] == {"complete": N_TRIALS, "pruned": 0, "failed": 0, "total": N_TRIALS}
