"""``--backend ray`` without an address starts a Ray of its own, as ``Tuner.fit()`` does, and it listens on
loopback only, with no dashboard (issue #17's secure defaults); the study finishes and Ray is shut down."""

from __future__ import annotations

import os
import threading
import time

import pytest
from tests._ray import TOKEN, listening_sockets, require_isolated_ray, write_table

from tunelab.execute import RayBackend
from tunelab.spec import parse_spec
from tunelab.tune import tune_experiment

pytestmark = [
    pytest.mark.ray,
    # ray.shutdown() leaves the processes of the Ray it started to finish on their own.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]


def test_a_ray_started_by_tunelab_binds_loopback_only(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = require_isolated_ray()
    before = set(listening_sockets())
    table = write_table(tmp_path / "table.csv", rows=1500, features=16)
    spec = parse_spec(
        {
            "name": "local-ray",
            "data": {"source": str(table), "target": "label"},
            "model": {"type": "mlp", "hidden": [32]},
            "train": {"epochs": 2},
            "search": {
                "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
                "n_trials": 4,
                "scheduler": {"name": "none"},
                "fused": "off",
                "top_k": 1,
                "n_seeds": 1,
                "ensemble": False,
            },
        }
    )
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(listening_sockets())
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = tune_experiment(
            spec,
            out_dir=tmp_path / "run",
            backend=RayBackend(cpus_per_worker=1, init_kwargs={"num_cpus": 2}),
        )
    finally:
        stop.set()
        watcher.join()
    opened = seen - before
    assert opened, "no Ray socket was seen"
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    assert [address for address in opened if not address.startswith(loopback)] == []
    assert not [address for address in opened if address.endswith(":8265")]  # no dashboard
    assert result.summary["trials"]["complete"] == 4
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert os.environ.get("RAY_ADDRESS") is None
