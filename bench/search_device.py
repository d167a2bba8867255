"""tunelab's search on vs_optuna's Fashion-MNIST workload, on any device, with or without CUDA graphs.

The same spec as ``bench/vs_optuna.py``'s tunelab side (``tunelab_spec``), with ``train.device`` and
``train.cuda_graphs`` set from the command line and one worker. Prints one JSON line: the wall time, trials
and epochs trained, the search's best validation accuracy at 30 / 60 / 90 s and at the end, the test accuracy
of the refit winner, and the fusion decision with its probe's throughputs. For what CUDA graphs change in a
whole search on a GPU:

    python bench/search_device.py --device cuda --budget 90
    python bench/search_device.py --device cuda --budget 90 --no-cuda-graphs
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import optuna
from _timeline import best_at, best_so_far, trial_records
from vs_optuna import tunelab_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="train.device (default cuda)")
    parser.add_argument("--budget", type=float, default=90.0, help="search.budget in seconds (default 90)")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="train.cuda_graphs: false")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from tunelab.spec import parse_spec
    from tunelab.tune import tune_experiment

    raw = tunelab_spec(args.budget, max_epochs=10, seed=args.seed)
    raw["train"]["device"] = args.device
    raw["train"]["cuda_graphs"] = not args.no_cuda_graphs
    spec = parse_spec(raw, source="bench/search_device.py")
    out = Path(tempfile.mkdtemp(prefix="tunelab-search-device-"))
    started = time.time()
    summary = tune_experiment(spec, out_dir=out, workers=1).summary
    elapsed = time.time() - started
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    records = trial_records(trials, started=started)
    curve = best_so_far(records)
    record = {
        "device": args.device,
        "cuda_graphs": not args.no_cuda_graphs,
        "budget_s": args.budget,
        "seconds": round(elapsed, 1),
        "trials": len(trials),
        "epochs": sum(r["epochs"] for r in records),
        "search_best": curve[-1][1] if curve else None,
        # When the last trial of the search ended, however it ended (the search's share of a budget is 80%).
        "search_end_s": round(max((r["end_s"] for r in records), default=0.0), 1),
        "search_best_at": {f"{limit}s": best_at(curve, limit) for limit in (30, 60, 90)},
        "test_accuracy": summary["test_metrics"].get("accuracy"),
        "fusion": summary["protocol"]["fusion"],
    }
    print(json.dumps(record), flush=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
