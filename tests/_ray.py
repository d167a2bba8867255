"""A local multi-node Ray cluster for the tests of ``--backend ray`` (issue #17), isolated from the network.

Ray listens on every address by default; these tests run it only inside a private network namespace that has
nothing but loopback (``make test`` runs the ``ray`` tests under ``unshare -n``, as root in CI), with token
authentication on (a random token per session), usage stats off, and every node bound to 127.0.0.1. Outside
such a namespace, or without the ``ray`` extra, the tests skip and say why.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TOKEN = secrets.token_hex(24)  # this test session's cluster token
RUN_HINT = (
    "run them in a private network namespace: "
    "unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -m ray' (as root; `make test` does)"
)


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but loopback."""
    try:  # /proc/net/dev is this namespace's (sysfs may still show the host's)
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def require_isolated_ray() -> Any:
    """``ray``, or a skip: it is not installed, or this is not a loopback-only namespace."""
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'tunelab[ray]')")
    if not only_loopback():
        pytest.skip("Ray tests need a network namespace with only loopback; " + RUN_HINT)
    return ray


@contextmanager
def ray_cluster(
    worker_nodes: int = 2, cpus_per_node: int = 1, dashboard_port: int | None = None
) -> Iterator[Any]:
    """A head with no CPUs and ``worker_nodes`` nodes of ``cpus_per_node`` CPUs, all on 127.0.0.1, token
    authentication on; the driver (this process) connected. Yields the ``ray.cluster_utils.Cluster``.
    ``dashboard_port``: the head also runs Ray's dashboard there (on 127.0.0.1), which ``ray job submit``
    talks to; none otherwise."""
    settings = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": TOKEN,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # no GPUs here; silences Ray's FutureWarning about them
    }
    saved = {key: os.environ.get(key) for key in settings}
    # Before Ray is imported: it reads the token once per process, so every cluster of a session shares it.
    os.environ.update(settings)
    ray = require_isolated_ray()
    from ray.cluster_utils import Cluster

    head: dict[str, Any] = {"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    if dashboard_port is not None:
        head.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dashboard_port)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        # Connected while the head is the only node: the driver then uses the head's raylet (every node is on
        # 127.0.0.1, so a later connection might pick a worker node's, which removing that node would break).
        ray.init(address=cluster.address, log_to_driver=False)
        for _ in range(worker_nodes):
            cluster.add_node(num_cpus=cpus_per_node, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def listening_sockets() -> list[str]:
    """The local addresses of every listening TCP socket (``ss -ltn``)."""
    import subprocess

    lines = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines if line.strip()]


def worker_node(cluster: Any, node_id: str) -> Any:
    """The cluster's node object whose Ray node id is ``node_id``."""
    for node in cluster.worker_nodes:
        if node.node_id == node_id:
            return node
    raise LookupError(f"no worker node {node_id} in the cluster")


def write_table(path: Path, rows: int = 6000, features: int = 32, seed: int = 0) -> Path:
    """A classification table big enough that an epoch of a population takes a moment."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=features, n_informative=12, n_classes=3, random_state=seed
    )
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"f{i}" for i in range(features)])
    frame["label"] = y
    frame.to_csv(path, index=False)
    return path
