"""Issue #17, must-show 5: the cost of a trial itself on Ray, tunelab's distributed loop beside Ray Tune's.

N no-op trials (a trial reports one value and ends) on a 2-node local Ray cluster (1 CPU each; a head with
none), two workers, in one run:

- tunelab: two long-lived Ray actors, each running tunelab's study loop (``run_study``) as a distributed
  worker does: the study in PostgreSQL (Optuna's storage behind the retrying wrapper), a lease per trial with
  heartbeats, the trial budget counted over both workers;
- Ray Tune: ``Tuner`` on the same cluster, a function trainable, ``reuse_actors=True``, two concurrent trials
  of one CPU (Ray Tune's fastest configuration), its default searcher.

Per trial: the wall time of the trials divided by their number, times the two workers (the time a worker
spends on a trial, which is all overhead for a no-op); and the driver's memory growth (its resident set
after minus before; the driver is this process in both cases). Runs in a private network namespace with
only loopback, like the tests (``tests/_ray.py``, ``tests/_postgres.py``).

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/ray_overhead.py --trials 10000'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._postgres import running_postgres
from tests._ray import only_loopback, ray_cluster

RESULTS = Path(__file__).parent / "results" / "ray_overhead.jsonl"


def _rss_mb() -> float:
    """This process's resident set now (MB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tunelab_worker(url: str, name: str, n_trials: int) -> dict:
    """One tunelab worker (a Ray actor's body): the distributed study loop over no-op trials."""
    import optuna

    from tunelab.search import SearchSpace, run_study
    from tunelab.storage import LeaseBook, Leasing, StudyDatabase, cached, connect_storage, retrying

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database = StudyDatabase(url, retry_seconds=600.0)
    rdb = connect_storage(url)
    space = SearchSpace.from_dict({"train.x": {"float": [0.0, 1.0]}})

    def noop(handle):
        handle.report(1, 0.5)
        return 0.5

    started = time.perf_counter()
    summary = run_study(
        noop,
        space,
        sampler="random",
        n_trials=n_trials,
        storage=retrying(cached(rdb), database),
        study_name="overhead",
        leasing=Leasing(
            LeaseBook(database, study="overhead", worker=name, node=name, grace_s=20.0), grace_s=20.0
        ),
        seed=int(name[1:]),
    )
    seconds = time.perf_counter() - started
    rdb.engine.dispose()
    database.close()
    return {"worker": name, "seconds": seconds, "complete": summary.n_complete}


def run_tunelab(url: str, n_trials: int) -> dict:
    import optuna
    import ray

    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name="overhead", storage=storage, direction="minimize")
    storage.engine.dispose()
    worker = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Actor)
    actors = [worker.remote() for _ in range(2)]
    ray.get([a.ready.remote() for a in actors])  # started and importing done: not part of a trial's cost
    before = _rss_mb()
    started = time.perf_counter()
    results = ray.get([a.run.remote(url, f"w{i}", n_trials) for i, a in enumerate(actors)])
    seconds = time.perf_counter() - started
    after = _rss_mb()
    for actor in actors:  # their CPUs go back to the cluster, for Ray Tune's trials
        ray.kill(actor, no_restart=True)
    storage = optuna.storages.RDBStorage(url)
    trials = optuna.load_study(study_name="overhead", storage=storage).get_trials()
    storage.engine.dispose()
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    return {
        "system": "tunelab",
        "trials": complete,
        "seconds": round(seconds, 2),
        "ms_per_trial_per_worker": round(1000 * seconds * 2 / complete, 2),
        "driver_rss_growth_mb": round(after - before, 1),
        "workers": results,
    }


class _Actor:
    def ready(self) -> bool:
        import tunelab.search  # imported before timing starts
        import tunelab.storage  # noqa: F401

        return True

    def run(self, url: str, name: str, n_trials: int) -> dict:
        return _tunelab_worker(url, name, n_trials)


def _noop_trainable(config: dict) -> dict:
    return {"score": config["x"]}


def run_ray_tune(n_trials: int, work: Path) -> dict:
    from ray import tune

    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    before = _rss_mb()
    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(_noop_trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            metric="score", mode="min", num_samples=n_trials, max_concurrent_trials=2, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(work / "ray"), verbose=0),
    )
    grid = tuner.fit()
    seconds = time.perf_counter() - started
    after = _rss_mb()
    complete = sum(result.error is None for result in grid)
    return {
        "system": "ray_tune",
        "trials": complete,
        "seconds": round(seconds, 2),
        "ms_per_trial_per_worker": round(1000 * seconds * 2 / max(complete, 1), 2),
        "driver_rss_growth_mb": round(after - before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--skip-ray-tune", action="store_true")
    args = parser.parse_args()
    if not only_loopback():
        sys.exit("run this under unshare -n (a network namespace with only loopback); see the docstring")
    work = Path(tempfile.mkdtemp(prefix="tunelab-overhead-"))
    with running_postgres() as server, ray_cluster(worker_nodes=2, cpus_per_node=1):
        url = server.create_database()
        rows = [run_tunelab(url, args.trials)]
        if not args.skip_ray_tune:
            rows.append(run_ray_tune(args.trials, work))
    record = {"bench": "ray_overhead", "trials_asked": args.trials, "results": rows}
    if len(rows) == 2:
        record["ray_tune_over_tunelab"] = round(
            rows[1]["ms_per_trial_per_worker"] / rows[0]["ms_per_trial_per_worker"], 2
        )
    print(json.dumps(record, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
