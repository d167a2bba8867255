"""Issue #17, must-show 5's other half: tunelab's own share of a distributed trial's cost, beside Optuna's.

One process, N no-op trials (a report and a value) on a throwaway PostgreSQL server (``tests/_postgres.py``),
two ways in interleaved rounds: ``plain``, tunelab's study loop on Optuna's cached RDB storage as a single
process uses it; ``leased``, the same loop as a distributed worker runs it (Optuna's storage behind the
retrying wrapper, a lease per trial, heartbeats, the shared study's reads and budget checks). The difference
per trial is what tunelab adds to what Optuna's storage costs anyway.

Beside them, ``optuna_split``: Optuna's own API alone (``ask``, ``suggest_float``, ``report``, ``tell`` on its
RDB storage, no tunelab code), each call timed, with the SQL statements per trial and the time of a trivial
transaction on the same server: where the per-trial floor of any loop on Optuna's storage comes from.

    .venv/bin/python bench/lease_share.py --trials 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._postgres import running_postgres

RESULTS = Path(__file__).parent / "results" / "ray_overhead.jsonl"


def _noop(handle) -> float:
    handle.report(1, 0.5)
    return 0.5


def _optuna_split(url: str, n_trials: int) -> dict:
    """Optuna's API alone on PostgreSQL: ms per call and per trial, SQL statements per trial, a round trip."""
    import optuna
    import sqlalchemy as sa

    storage = optuna.storages.RDBStorage(url)
    statements = 0

    def count(*_args) -> None:
        nonlocal statements
        statements += 1

    sa.event.listen(storage.engine, "before_cursor_execute", count)
    study = optuna.create_study(study_name="split", storage=storage, sampler=optuna.samplers.RandomSampler(0))
    seconds = dict.fromkeys(("ask", "suggest", "report", "tell"), 0.0)
    statements = 0
    for _ in range(n_trials):
        t0 = time.perf_counter()
        trial = study.ask()
        t1 = time.perf_counter()
        trial.suggest_float("x", 0.0, 1.0)
        t2 = time.perf_counter()
        trial.report(0.5, 1)
        t3 = time.perf_counter()
        study.tell(trial, 0.5)
        t4 = time.perf_counter()
        for name, spent in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            seconds[name] += spent
    per_trial = statements / n_trials
    with storage.engine.connect() as connection:
        started = time.perf_counter()
        for _ in range(n_trials):
            with connection.begin():
                connection.execute(sa.text("SELECT 1"))
        round_trip_ms = 1000 * (time.perf_counter() - started) / n_trials
    storage.engine.dispose()
    ms = {name: round(1000 * spent / n_trials, 2) for name, spent in seconds.items()}
    return {
        "ms_per_call": ms,
        "ms_per_trial": round(sum(ms.values()), 2),
        "sql_statements_per_trial": round(per_trial, 1),
        "trivial_transaction_ms": round(round_trip_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import optuna

    from tunelab.search import SearchSpace, run_study
    from tunelab.storage import LeaseBook, Leasing, StudyDatabase, cached, connect_storage, retrying

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_dict({"train.x": {"float": [0.0, 1.0]}})
    ms: dict[str, list[float]] = {"plain": [], "leased": []}
    splits = []
    with running_postgres() as server:
        for _ in range(args.rounds):
            splits.append(_optuna_split(server.create_database(), args.trials))
            for kind in ms:
                url = server.create_database()
                rdb = connect_storage(url)
                rdb.engine.dispose()
                storage = cached(rdb)
                extra = {}
                database = None
                if kind == "leased":
                    database = StudyDatabase(url)
                    book = LeaseBook(database, study="s", worker="w", node="n", grace_s=20.0)
                    extra["leasing"] = Leasing(book, grace_s=20.0)
                    storage = retrying(storage, database)
                started = time.perf_counter()
                run_study(
                    _noop,
                    space,
                    sampler="random",
                    n_trials=args.trials,
                    storage=storage,
                    study_name="s",
                    **extra,
                )
                ms[kind].append(round(1000 * (time.perf_counter() - started) / args.trials, 2))
                rdb.engine.dispose()
                if database is not None:
                    database.close()
    share = [round(leased - plain, 2) for plain, leased in zip(ms["plain"], ms["leased"], strict=True)]
    record = {
        "bench": "lease_share",
        "trials": args.trials,
        "ms_per_trial": ms,
        "tunelab_share_ms": share,
        "median_share_ms": statistics.median(share),
        "optuna_split": splits,
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
