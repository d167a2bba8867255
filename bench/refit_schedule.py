"""The refit's learning-rate schedule, replayed or squeezed, on small real data sets beyond text.

A refit trains the winner again on train + validation for its best epoch count E. Before 2026-12-07 its
schedule was squeezed into those E epochs (a cosine decaying to its floor by epoch E); now it replays the
validated run (the schedule's horizon stays ``train.epochs``) and stops after epoch E (``fit_final``). Per
data set and seed: one run as a search trial trains it (the MLP below, AdamW, cosine over 40 epochs, early
stopping on the validation loss with patience 6, the best epoch restored), then both refits train on train +
validation for its best epoch count, and the test part scores them (accuracy, or RMSE for regression).
Prints a line per data set and seed, and medians.

    .venv/bin/python bench/refit_schedule.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from pathlib import Path

import torch

from tunelab.execute import Evaluator
from tunelab.spec import parse_spec
from tunelab.tune._select import fit_final

DATASETS = ["digits", "wine", "breast_cancer", "diabetes"]


def measure(source: str, seed: int) -> dict[str, float | int | str]:
    spec = parse_spec(
        {
            "name": "refit-schedule",
            "data": {"source": source},
            "model": {"type": "mlp", "hidden": [64], "dropout": 0.1},
            "train": {
                "epochs": 40,
                "lr": 1e-2,
                "batch_size": 32,
                "seed": seed,
                "optimizer": "adamw",
                "schedule": {"name": "cosine"},
                "early_stopping": {"monitor": "val_loss", "patience": 6, "restore_best": True},
            },
            "search": {"space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}}, "refit": True},
        }
    )
    evaluator = Evaluator(spec, spec.data)
    bundle = evaluator.bundle(None)
    metric = "accuracy" if bundle.task == "classification" else "rmse"
    run = evaluator.run(spec, None, f"val_{metric}")
    epochs = run.best_epoch
    replayed = fit_final(spec, {}, evaluator, epochs=epochs)
    squeezed_train = spec.train.model_copy(update={"epochs": epochs, "early_stopping": None})
    squeezed = evaluator.trainer(spec.model_copy(update={"train": squeezed_train}), bundle)
    squeezed.fit((torch.cat([bundle.X_train, bundle.X_val]), torch.cat([bundle.y_train, bundle.y_val])))

    def test(trainer) -> float:
        return float(trainer.evaluate(bundle.X_test, bundle.y_test)[metric])

    return {
        "data": source,
        "seed": seed,
        "metric": metric,
        "best_epoch": epochs,
        "search_run": test(run.trainer),
        "squeezed": test(squeezed),
        "replayed": test(replayed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/results/refit_schedule.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rows = []
    for source in DATASETS:
        for seed in args.seeds:
            row = measure(source, seed)
            rows.append(row)
            print(
                f"{source:13s} seed {seed}: best epoch {row['best_epoch']:2d}; test {row['metric']} "
                f"squeezed {row['squeezed']:.4f}, replayed {row['replayed']:.4f} "
                f"(the search run {row['search_run']:.4f})",
                flush=True,
            )
    summary = {}
    for source in DATASETS:
        ours = [r for r in rows if r["data"] == source]
        summary[source] = {
            key: statistics.median(float(r[key]) for r in ours)
            for key in ("squeezed", "replayed", "search_run")
        }
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "rows": rows, "median": summary}, indent=2))


if __name__ == "__main__":
    main()
