"""Issue #17, must-shows 3 and 4: 4 workers x 200 trials on PostgreSQL, 2 ``tunelab worker`` processes and 2
Ray workers (``tunelab tune --backend ray --max-concurrent 2`` on a 2-node local Ray cluster), a trivial
1-epoch objective (a one-hidden-layer MLP of 8 units, 150 rows); optionally the database cut mid-run.

Everything runs inside a private network namespace with only loopback (run it under ``unshare -n``), as the
tests do: a throwaway PostgreSQL server (``tests/_postgres.py``) and a token-authenticated Ray cluster
(``tests/_ray.py``). While the study runs, it samples ``pg_stat_activity`` and maps every connection to its
client process (``ss -tnp``): the most connections any one worker process held. ``--cut S`` stops the server
(``pg_ctl stop -m fast``: connections refused and terminated) once a third of the trials are done, and
starts it again S seconds later. At the end: the trials by state, unique numbers, none left RUNNING, the
lease table's states (how many reclaimed), every process's exit code and whether any printed a traceback,
and optuna-dashboard's API listing the study's trials.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/distributed_study.py'           # ms 3
    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/distributed_study.py --cut 10'  # ms 4
    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/distributed_study.py --cut 40 --grace 20'
    ... --cut 40 --grace 20 --epochs 30   # trials of 30 epochs: some are mid-training when the cut comes
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._postgres import running_postgres
from tests._ray import only_loopback, ray_cluster

RESULTS = Path(__file__).parent / "results" / "distributed_study.jsonl"


def _spec(path: Path, n_trials: int, epochs: int) -> Path:
    import yaml
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame
    table = path.parent / "iris.csv"
    iris.to_csv(table, index=False)
    spec = {
        "name": "many",
        "seed": 0,
        "data": {"source": str(table), "target": "target"},
        "model": {"type": "mlp", "hidden": [8]},
        "train": {"epochs": epochs, "batch_size": 32},
        "search": {
            "space": {"train.lr": {"float": [1e-4, 1e-1], "log": True}},
            "n_trials": n_trials,
            "scheduler": {"name": "none"},
            "fused": "off",
            "top_k": 1,
            "n_seeds": 1,
            "refit": True,
            "ensemble": False,
        },
    }
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


class _Watcher(threading.Thread):
    """Samples the server's connections per client process; cuts the database when told."""

    def __init__(self, server, url: str, n_trials: int, cut_s: float | None) -> None:
        super().__init__(daemon=True)
        self.server, self.url, self.n_trials, self.cut_s = server, url, n_trials, cut_s
        self.max_per_process: dict[int, int] = {}
        self.labels: dict[int, str] = {}
        self.cut_at: float | None = None
        self.running_at_cut: list[int] = []
        self.held_at_cut: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        while not self.stop.is_set():
            held: list[int] = []
            try:
                with psycopg.connect(
                    self.url.replace("postgresql+psycopg", "postgresql"), autocommit=True
                ) as c:
                    ports = [
                        r[0]
                        for r in c.execute(
                            "SELECT client_port FROM pg_stat_activity WHERE client_port IS NOT NULL "
                            "AND pid <> pg_backend_pid()"
                        ).fetchall()
                    ]
                    done = c.execute(
                        "SELECT count(*) FROM trials WHERE state IN ('COMPLETE','FAIL')"
                    ).fetchone()[0]
                    running = [
                        r[0] for r in c.execute("SELECT number FROM trials WHERE state='RUNNING'").fetchall()
                    ]
            except Exception:  # the server is down (our own cut) or the tables are not there yet
                time.sleep(0.2)
                continue
            owners = _port_owners(self.server.port)
            counts = collections.Counter(owners[p] for p in ports if p in owners)
            for pid, n in counts.items():
                self.max_per_process[pid] = max(self.max_per_process.get(pid, 0), n)
                if pid not in self.labels:
                    self.labels[pid] = _label(pid)
            if self.cut_s is not None and self.cut_at is None and done >= self.n_trials // 3:
                self.cut_at = time.time()
                self.running_at_cut = running
                self.held_at_cut = held
                self.server.stop(mode="fast")
                time.sleep(self.cut_s)
                self.server.resume()
            time.sleep(0.25)


def _label(pid: int) -> str:
    """What process ``pid`` is: the tune driver, a tunelab worker, a Ray actor, or another."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if " tune " in command:
        return "driver (tunelab tune)"
    if " worker " in command:
        return "tunelab worker " + command.split("--name ")[1].split()[0]
    if command.startswith("ray::"):
        return command.split()[0]
    return command[:40]


def _port_owners(server_port: int) -> dict[int, int]:
    """Client port -> pid of every TCP connection to the server's port."""
    out = subprocess.run(["ss", "-tnpH", f"dport = :{server_port}"], capture_output=True, text=True).stdout
    owners = {}
    for line in out.splitlines():
        fields = line.split()
        pid = re.search(r"pid=(\d+)", line)
        if len(fields) >= 4 and pid:
            owners[int(fields[3].rsplit(":", 1)[1])] = int(pid.group(1))
    return owners


def _dashboard_trials(url: str) -> int:
    """How many trials optuna-dashboard's API lists for the study."""
    port = 18080
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("optuna-dashboard")),
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        studies: dict = {"study_summaries": []}
        for _ in range(300):
            try:
                studies = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2))
                break
            except OSError:
                time.sleep(0.2)
        study_id = next(s["study_id"] for s in studies["study_summaries"] if s["study_name"] == "many")
        detail = json.load(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0", timeout=30)
        )
        return len(detail["trials"])
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=800)
    parser.add_argument("--cut", type=float, default=None, help="seconds the database is down mid-run")
    parser.add_argument("--grace", type=float, default=20.0)
    parser.add_argument(
        "--epochs", type=int, default=1, help="epochs per trial (more: trials are mid-training at the cut)"
    )
    args = parser.parse_args()
    if not only_loopback():
        sys.exit("run this under unshare -n (a network namespace with only loopback); see the docstring")
    import tempfile

    import optuna

    work = Path(tempfile.mkdtemp(prefix="tunelab-distributed-"))
    spec = _spec(work / "spec.yaml", args.trials, args.epochs)
    with running_postgres() as server, ray_cluster(worker_nodes=2, cpus_per_node=1) as cluster:
        url = server.create_database()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        started = time.time()
        common = ["--grace", str(args.grace)]
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunelab.cli",
                "tune",
                str(spec),
                "--storage",
                url,
                "--out",
                str(work / "run"),
                "--backend",
                "ray",
                "--address",
                cluster.address,
                "--max-concurrent",
                "2",
                "--quiet",
                *common,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watcher = _Watcher(server, url, args.trials, args.cut)
        watcher.start()
        workers = []
        for name in ("w1", "w2"):
            for _ in range(600):  # the driver publishes the plan first
                probe = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import optuna,sys; s=optuna.load_study(study_name='many', storage=sys.argv[1]); "
                        "sys.exit(0 if 'tunelab_plan' in s.user_attrs else 1)",
                        url,
                    ],
                    capture_output=True,
                )
                if probe.returncode == 0:
                    break
                time.sleep(0.5)
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tunelab.cli",
                        "worker",
                        "--storage",
                        url,
                        "--study",
                        "many",
                        "--name",
                        name,
                        "--out",
                        str(work / name),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = {}
        for name, proc in [("driver", driver), *zip(("w1", "w2"), workers, strict=True)]:
            out, err = proc.communicate(timeout=3600)
            outputs[name] = {
                "exit": proc.returncode,
                "traceback": "Traceback" in err + out,
                "stderr_tail": err[-600:],
            }
        elapsed = time.time() - started
        watcher.stop.set()
        storage = optuna.storages.RDBStorage(url)
        trials = optuna.load_study(study_name="many", storage=storage).get_trials()
        import sqlalchemy as sa

        with storage.engine.connect() as c:
            leases = collections.Counter(
                r[0] for r in c.execute(sa.text("SELECT state FROM tunelab_leases")).all()
            )
            reclaimed = sorted(
                r[0]
                for r in c.execute(sa.text("SELECT number FROM tunelab_leases WHERE state='reclaimed'")).all()
            )
        storage.engine.dispose()
        states = collections.Counter(t.state.name for t in trials)
        configurations = [
            t.user_attrs.get("retry_of", t.number) for t in trials if t.state.name == "COMPLETE"
        ]
        record = {
            "bench": "distributed_study",
            "trials_asked": args.trials,
            "epochs": args.epochs,
            "cut_s": args.cut,
            "grace_s": args.grace,
            "elapsed_s": round(elapsed, 1),
            "states": dict(states),
            "complete_configurations": len(configurations),
            "configurations_unique": len(configurations) == len(set(configurations)),
            "numbers_unique": len({t.number for t in trials}) == len(trials),
            "left_running": states.get("RUNNING", 0) + states.get("WAITING", 0),
            "never_started": sum("never_started" in t.user_attrs for t in trials),
            "leases": dict(leases),
            "reclaimed": reclaimed,
            "running_at_cut": watcher.running_at_cut,
            "leased_at_cut": watcher.held_at_cut,
            "retries": sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs),
            "max_connections_per_process": max(watcher.max_per_process.values(), default=0),
            "connections_per_process": {
                f"{watcher.labels.get(pid, '?')} ({pid})": n
                for pid, n in sorted(watcher.max_per_process.items())
            },
            "processes": outputs,
            "dashboard_trials": _dashboard_trials(url),
        }
    print(json.dumps(record, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
