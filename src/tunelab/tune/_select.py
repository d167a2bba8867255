"""After the search: re-evaluate the top candidates with fresh seeds, refit the winner, test once."""

from __future__ import annotations

import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

from tunelab.data import DataBundle
from tunelab.errors import TrainingError
from tunelab.run import write_test_predictions
from tunelab.search import (
    SearchSpec,
    StudySummary,
)
from tunelab.search._storage import hide_password
from tunelab.spec import ExperimentSpec
from tunelab.train import Trainer
from tunelab.tune._trials import Evaluator, trial_spec


def json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats become null; other objects their string form."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


# ----------------------------------------------------------------------------------- selection and refit


def reevaluate(
    study: optuna.Study,
    space: Any,
    spec: ExperimentSpec,
    evaluator: Evaluator,
    folds: list[int | None],
    metric: str,
    direction: str,
    search: SearchSpec,
    deadline: float | None,
    say: Any,
) -> list[dict[str, Any]]:
    """Train the top candidates again with fresh seeds on every fold; best mean first."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    complete.sort(key=lambda t: float(t.value or 0.0), reverse=direction == "maximize")
    candidates: list[dict[str, Any]] = []
    for trial in complete[: search.top_k]:
        params, pbt = final_params(trial, space)
        record: dict[str, Any] = {
            "trial": trial.number,
            "params": params,
            "search_value": trial.value,
            "scores": [],
            "best_epochs": list(trial.user_attrs.get("best_epochs", [])),
            **pbt,
        }
        # A fresh run takes about what the trial took per fold (less if it trained in a population, which
        # shared its time); one is started only if it and the refit after it (about as long) fit.
        needed = 2 * _seconds_per_fold(trial, len(folds))
        for offset in range(1, search.n_seeds + 1):
            for fold in folds:
                if deadline is not None and time.monotonic() + needed > deadline:
                    break  # the budget is spent: the search's own scores decide
                seeded = trial_spec(spec, params, seed=spec.train.seed + offset)
                try:
                    # None only if a callback cut it short; this run has none.
                    score, best_epoch = evaluator.score(seeded, fold, metric) or (math.nan, 0)
                except TrainingError:
                    score, best_epoch = math.nan, 0
                record["scores"].append(score)
                record["best_epochs"].append(best_epoch)
        record.update(_interval(record["scores"]))
        say(
            f"candidate trial {trial.number}: {metric} {record['mean']:.4f} ± {record['std']:.4f} "
            f"over {record['n']} fresh runs"
            if record["n"]
            else f"candidate trial {trial.number}: not re-evaluated (budget spent)"
        )
        candidates.append(record)
    scored = [c for c in candidates if c["n"] > 0]
    rest = [c for c in candidates if c["n"] == 0]
    scored.sort(key=lambda c: c["mean"], reverse=direction == "maximize")
    return scored + rest


def _seconds_per_fold(trial: optuna.trial.FrozenTrial, n_folds: int) -> float:
    """The trial's wall time per fold (0 when unknown)."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds()) / max(1, n_folds)


def final_params(trial: optuna.trial.FrozenTrial, space: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters ``trial`` ended with (nested overrides), and what a candidate record adds under PBT.

    A trial's Optuna parameters are the values it started with. Under PBT a trial copies another's weights
    and trains on with that trial's values perturbed; each exploit is in its user attribute ``pbt_exploits``,
    so the values it ended with are the last one's. The record then also keeps ``initial_params``, the
    number of exploits, and the epoch of the last one.
    """
    initial = space.overrides_from_params(trial.params)
    exploits = trial.user_attrs.get("pbt_exploits") or []
    if not exploits:
        return initial, {}
    last = exploits[-1]
    return dict(last["params"]), {
        "initial_params": initial,
        "pbt_exploits": len(exploits),
        "params_from": f"its exploit at epoch {last['epoch']} (copying trial {last['source']})",
    }


def _interval(scores: list[float]) -> dict[str, Any]:
    finite = [s for s in scores if math.isfinite(s)]
    n = len(finite)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci95": [math.nan, math.nan]}
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    else:
        half = math.nan
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def refit_winner(
    spec: ExperimentSpec,
    winner: dict[str, Any],
    evaluator: Evaluator,
    search: SearchSpec,
    run_dir: Path,
    say: Any,
) -> dict[str, Any]:
    """Retrain the winner on train + validation for its median best epoch count; test once; export."""
    from tunelab.export import export_model

    epochs = max(1, round(statistics.median(winner["best_epochs"] or [spec.train.epochs])))
    final = trial_spec(spec, winner["params"])
    bundle = evaluator.bundle(None)
    if search.refit:
        final_train = final.train.model_copy(update={"epochs": epochs, "early_stopping": None})
        final = final.model_copy(update={"train": final_train})
        X = torch.cat([bundle.X_train, bundle.X_val])
        y = torch.cat([bundle.y_train, bundle.y_val])
        trainer = evaluator.trainer(final, bundle)
        trainer.fit((X, y))
    else:
        trainer = evaluator.trainer(final, bundle)
        trainer.fit((bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val))
    test_metrics = trainer.evaluate(bundle.X_test, bundle.y_test)
    say(f"refit on train + validation for {epochs} epochs; test: {_fmt_metrics(test_metrics)}")
    _write_final(run_dir, trainer, bundle)
    export_model(
        run_dir / "best",
        model=trainer.model,
        preprocessor=bundle.preprocessor,
        model_spec=final.model,
        task=bundle.task,
        input_shape=bundle.input_shape,
        output_dim=evaluator.output_dim(final, bundle),
        metadata={"spec": final.model_dump(mode="json"), "test_metrics": test_metrics},
        example_input=bundle.X_test[:2],
    )
    return {"epochs": epochs, "test_metrics": test_metrics, "trainer": trainer, "task": bundle.task}


def _write_final(run_dir: Path, trainer: Trainer, bundle: DataBundle) -> None:
    """The final model's training curve and its test predictions (for the report's plots)."""
    (run_dir / "final_history.json").write_text(json.dumps(trainer.history.to_dict(), indent=2))
    write_test_predictions(run_dir / "test_predictions.csv", trainer, bundle)


def _fmt_metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in values.items())


def build_summary(
    spec: ExperimentSpec,
    search: SearchSpec,
    metric: str,
    direction: str,
    study: optuna.Study,
    result: StudySummary,
    candidates: list[dict[str, Any]],
    refit: dict[str, Any],
    folds: list[int | None],
    started: float,
    storage_url: str,
) -> dict[str, Any]:
    winner = candidates[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials in some regimes": the figures say so themselves
            ranked = optuna.importance.get_param_importances(study)
        importance = {k: round(v, 4) for k, v in ranked.items()}
    except (RuntimeError, ValueError):
        importance = {}  # fewer than two complete trials, or a single-valued space
    validation = "holdout" if folds == [None] else f"{len(folds)}-fold cross-validation"
    summary: dict[str, Any] = {
        "name": spec.name,
        "task": refit["task"],
        "metric": metric,
        "direction": direction,
        "best_params": winner["params"],
        "best_value": winner["mean"] if winner["n"] else winner["search_value"],
        "best_trial": winner["trial"],
        "test_metrics": refit["test_metrics"],
        "trials": {
            "complete": result.n_complete,
            "pruned": result.n_pruned,
            "failed": result.n_failed,
            "total": result.n_complete + result.n_pruned + result.n_failed,
        },
        "epochs_trained_in_search": result.n_epochs,
        "stop_reason": result.stop_reason,
        "elapsed_seconds": round(time.monotonic() - started, 2),
        "candidates": candidates,
        "importance": importance,
        "protocol": {
            "validation": validation,
            "sampler": search.sampler,
            "scheduler": search.scheduler.name,
            "reevaluation": f"top {search.top_k} re-trained with {search.n_seeds} fresh seeds per fold; "
            "mean ± std and a 95% t-interval; best mean wins",
            "refit": f"winner retrained on train + validation for {refit['epochs']} epochs"
            if search.refit
            else "no refit: the winner as trained on the training part",
            "test": "the test part, set aside first, evaluated once after the refit",
        },
        "storage": hide_password(storage_url),  # a summary is shared; a database password is not
        "export": "best/",
    }
    if search.scheduler.name == "pbt":
        cfg = search.scheduler
        summary["protocol"]["pbt"] = (
            f"population-based training: every {cfg.perturbation_interval} epochs the bottom "
            f"{cfg.quantile_fraction:.0%} of a population copied the weights of a member of the top and "
            "trained on with its hyperparameters perturbed. PBT's hyperparameter schedule is not replayed: "
            "re-evaluation and the refit train each candidate from scratch with the values it ended with "
            "(its final values; best_params), not the sequence of values it went through"
        )
    if "initial_params" in winner:
        summary["best_params_are"] = (
            f"the values trial {winner['trial']} ended with under PBT, from {winner['params_from']}; it "
            "started from best_initial_params"
        )
        summary["best_initial_params"] = winner["initial_params"]
    return summary
