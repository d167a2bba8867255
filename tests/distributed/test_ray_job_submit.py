"""Issue #17: `tunelab tune --backend ray` as the entry point of a Ray job (`ray job submit`): it joins the
job's cluster (``RAY_ADDRESS``, which Ray sets for the job), runs its trials on the cluster's worker nodes and
does selection, refit and export in the job's driver."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from tests._postgres import free_port
from tests._ray import TOKEN, listening_sockets, ray_cluster, write_table

from tunelab.storage import LeaseBook, StudyDatabase

pytestmark = pytest.mark.ray
N_TRIALS = 6


def test_tune_runs_as_a_ray_job(tmp_path, postgres_url):
    if importlib.util.find_spec("aiohttp") is None:  # checked without importing Ray (see ray_cluster)
        pytest.skip("`ray job submit` needs Ray's dashboard: pip install 'ray[default]'")
    table = write_table(tmp_path / "table.csv", rows=600, features=16)
    spec = {
        "name": "jobbed",
        "seed": 0,
        "data": {"source": str(table), "target": "label"},
        "model": {"type": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 32},
        "search": {
            "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
            "n_trials": N_TRIALS,
            "scheduler": {"name": "none"},
            "top_k": 1,
            "n_seeds": 1,
            "ensemble": False,
        },
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    port = free_port()
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"  # this environment's
    with ray_cluster(worker_nodes=2, dashboard_port=port):
        # Imported once the cluster's fixture has set the token (Ray reads it at import).
        pytest.importorskip(
            "ray.dashboard.modules.job.sdk",
            reason="`ray job submit` needs Ray's dashboard: pip install 'ray[default]'",
        )
        # Absolute paths and no --working-dir: with several nodes on one host, Ray unpacks a job's working
        # directory once per node into the same session directory, replacing the one the driver runs in.
        entrypoint = [
            sys.executable, "-m", "tunelab.cli", "tune", str(tmp_path / "spec.yaml"), "--backend", "ray",
            "--storage", postgres_url, "--out", str(tmp_path / "run"), "--quiet",
        ]  # fmt: skip
        job = subprocess.run(
            [ray_cli, "job", "submit", "--address", f"http://127.0.0.1:{port}", "--", *entrypoint],
            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=300,
        )
        sockets = listening_sockets()
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    assert "Traceback" not in job.stdout + job.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trials"]["complete"] == N_TRIALS
    assert (tmp_path / "run" / "best").is_dir()
    storage = optuna.storages.RDBStorage(postgres_url)
    trials = optuna.load_study(study_name="jobbed", storage=storage).get_trials()
    storage.engine.dispose()
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == N_TRIALS
    database = StudyDatabase(postgres_url)
    leases = LeaseBook(database, study="jobbed", worker="reader", node="test").leases(states=("finished",))
    database.close()
    assert len(leases) == N_TRIALS
    assert {lease.worker for lease in leases} <= {
        "ray-worker-1",
        "ray-worker-2",
    }  # the cluster's actors ran them
    assert all(address.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for address in sockets)
