"""Issue #17, must-show 2: the same 32 configurations (enqueued, fixed seeds, no early stopping) give the same
per-trial values from two local worker processes (``--workers 2``) as from Ray workers on a 2-node cluster."""

from __future__ import annotations

import optuna
import pytest
from tests._ray import ray_cluster, write_table

from tunelab.errors import SpecError
from tunelab.execute import RayBackend
from tunelab.spec import parse_spec
from tunelab.tune import tune_experiment

pytestmark = pytest.mark.ray

LRS = [1e-3, 2e-3, 5e-3, 1e-2]
DECAYS = [0.0, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3]


def _spec(table, name: str):
    first = [{"train.lr": lr, "train.weight_decay": wd} for lr in LRS for wd in DECAYS]
    return parse_spec(
        {
            "name": name,
            "seed": 0,
            "data": {"source": str(table), "target": "label"},
            "model": {"type": "mlp", "hidden": [64]},
            "train": {"epochs": 3, "batch_size": 64},
            "search": {
                "space": {
                    "train.lr": {"float": [1e-4, 1e-1], "log": True},
                    "train.weight_decay": {"float": [0.0, 0.5]},
                },
                "first_trials": first,
                "n_trials": len(first),
                "scheduler": {"name": "none"},
                "fused": "on",
                "population_size": 4,
                "top_k": 1,
                "n_seeds": 1,
                "refit": True,
                "ensemble": False,
            },
        }
    )


def _values(url: str, name: str) -> dict[tuple[float, float], float]:
    storage = optuna.storages.RDBStorage(url)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    # Workers that asked at the same moment for the last trials drop the extra ones as never started.
    trials = [t for t in trials if "never_started" not in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return {(t.params["train.lr"], t.params["train.weight_decay"]): float(t.value) for t in trials}


def test_ray_workers_give_the_local_workers_values(tmp_path, postgres_url):
    table = write_table(tmp_path / "table.csv", rows=1500, features=16)
    tune_experiment(_spec(table, "local"), out_dir=tmp_path / "local", workers=2)
    local = _values(f"sqlite:///{tmp_path / 'local' / 'study.db'}", "local")
    with ray_cluster(worker_nodes=2, cpus_per_node=1) as cluster:
        tune_experiment(
            _spec(table, "ray"),
            out_dir=tmp_path / "ray",
            storage=postgres_url,
            backend=RayBackend(address=cluster.address),
        )
        # A study file cannot be shared by two nodes: refused before anything is trained.
        with pytest.raises(SpecError, match=r"is a file, which the other \d+ node"):
            tune_experiment(
                _spec(table, "file"),
                out_dir=tmp_path / "file",
                backend=RayBackend(address=cluster.address),
            )
    on_ray = _values(postgres_url, "ray")
    assert len(local) == len(on_ray) == len(LRS) * len(DECAYS)
    assert local.keys() == on_ray.keys()
    worst = max(abs(local[key] - on_ray[key]) for key in local)
    assert worst <= 1e-6, {key: (local[key], on_ray[key]) for key in local}
