"""After the search: re-evaluate the top candidates with fresh seeds, refit the winner, test once, export what
is delivered."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import optuna
import torch

from tunelab.clock import Clock, system_clock
from tunelab.errors import TrainingError
from tunelab.execute import Evaluator, output_dim, trial_spec
from tunelab.layout import RunLayout
from tunelab.models import AnyModelSpec
from tunelab.run import write_test_predictions
from tunelab.search import Events, SearchSpace, SearchSpec
from tunelab.spec import ExperimentSpec
from tunelab.train import Callback, Trainer
from tunelab.tune._interval import interval
from tunelab.tune._result import Candidate, Refit, SeedRun

__all__ = [
    "export_delivered",
    "final_epochs",
    "final_params",
    "fit_final",
    "fmt_metrics",
    "reevaluate",
    "refit_winner",
]


def reevaluate(
    study: optuna.Study,
    space: SearchSpace,
    spec: ExperimentSpec,
    evaluator: Evaluator,
    *,
    folds: list[int | None],
    metric: str,
    direction: str,
    deadline: float | None,
    events: Events,
    clock: Clock = system_clock,
    throughput: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """Train the top ``search.top_k`` trials (and the best trial of each of ``search.first_trials``, if not
    among them) again with ``search.n_seeds`` fresh seeds on every fold; best mean first. A fresh run
    starts only if it and the refit after it fit before ``deadline`` (on ``clock``); ``throughput``: the
    fusion probe's member-samples per second (``sequential``, ``K=<k>``), which turns a fused trial's wall
    time into one run's."""
    search = spec.search or SearchSpec()
    members = Counter(t.user_attrs["population"] for t in study.trials if "population" in t.user_attrs)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    complete.sort(key=lambda t: float(t.value or 0.0), reverse=direction == "maximize")
    trials = complete[: search.top_k]
    trials += [t for t in _first_trials(complete, search.first_trials) if t not in trials]
    finals = [final_params(trial, space) for trial in trials]
    scores: list[list[float]] = [[] for _ in trials]
    best_epochs = [list(c.best_epochs) for c in finals]
    runs: list[list[SeedRun]] = [[] for _ in trials]
    epoch_seconds: list[list[float]] = [[] for _ in trials]
    # A fresh run takes about what the trial took per fold (less if it trained in a population, which shared
    # its time); one is started only if it and the refit after it (about as long) fit, and under
    # search.refit 'all' the fit on every row after that too: three runs' time, not two. Seeds go round the
    # candidates, so each gets a complete one before any gets a second; a seed cut short by the budget is
    # dropped (some folds alone are not comparable with all of them).
    runs_after = 3 if search.refit == "all" else 2
    needed = [
        runs_after * _seconds_per_fold(t, len(folds)) * _alone_share(t, members, throughput or {})
        for t in trials
    ]
    for offset in range(1, search.n_seeds + 1):
        seed = spec.train.seed + offset
        for i, candidate in enumerate(finals):
            started, fold_runs = clock.monotonic(), []
            for fold in folds:
                if deadline is not None and clock.monotonic() + needed[i] > deadline:
                    break  # the budget is spent: the search's own scores decide
                try:
                    # None only if a callback cut it short; this run has none.
                    fold_runs.append(
                        evaluator.run(trial_spec(spec, candidate.params, seed=seed), fold, metric)
                    )
                except TrainingError:
                    fold_runs.append(None)
            if len(fold_runs) < len(folds):
                continue
            scores[i] += [run.score if run is not None else math.nan for run in fold_runs]
            best_epochs[i] += [run.best_epoch if run is not None else 0 for run in fold_runs]
            if all(run is not None and math.isfinite(run.score) for run in fold_runs):  # a possible member
                outputs = tuple(run.outputs for run in fold_runs if run is not None)
                seconds = [run.epoch_seconds for run in fold_runs if run is not None]
                epoch_seconds[i] += [x for x in seconds if math.isfinite(x)]
                first = fold_runs[0].trainer if fold_runs[0] is not None else None
                runs[i].append(SeedRun(seed, outputs, clock.monotonic() - started, first))
    n_val = min(len(evaluator.bundle(fold).X_val) for fold in folds)  # rows behind each score
    candidates: list[Candidate] = []
    for i, (trial, candidate) in enumerate(zip(trials, finals, strict=True)):
        estimate = interval(scores[i], metric, n_rows=n_val)
        measured = statistics.fmean(epoch_seconds[i]) if epoch_seconds[i] else _trial_epoch_seconds(trial)
        candidate = replace(
            candidate,
            scores=scores[i],
            best_epochs=best_epochs[i],
            runs=tuple(runs[i]),
            epoch_seconds=measured
            * (1.0 if epoch_seconds[i] else _alone_share(trial, members, throughput or {})),
            **estimate,
        )
        events.phase(
            f"candidate trial {trial.number}: {metric} {candidate.mean:.4f} ± {candidate.std:.4f} "
            f"over {candidate.n} fresh runs"
            if candidate.n
            else f"candidate trial {trial.number}: not re-evaluated (budget spent)"
        )
        candidates.append(candidate)
    scored = sorted((c for c in candidates if c.n > 0), key=lambda c: c.mean, reverse=direction == "maximize")
    return scored + [c for c in candidates if c.n == 0]


def _first_trials(
    complete: list[optuna.trial.FrozenTrial], first: list[dict[str, Any]]
) -> list[optuna.trial.FrozenTrial]:
    """The best complete trial of each of ``search.first_trials`` (the configurations the search started
    from: for a small table the linear model): re-evaluated beside the top ones, so that the choice between
    the search's best and the simple model it contains rests on fresh runs (``complete`` is best first)."""
    found = []
    for params in first:
        match = next((t for t in complete if all(t.params.get(k) == v for k, v in params.items())), None)
        if match is not None and match not in found:
            found.append(match)
    return found


def _trial_epoch_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """The trial's wall time per epoch it reported (NaN when unknown); all of it when it reported none (a
    trial the budget cut within its first epoch: less than an epoch takes)."""
    seconds = _trial_seconds(trial)
    return math.nan if seconds is None else seconds / max(1, len(trial.intermediate_values))


def _seconds_per_fold(trial: optuna.trial.FrozenTrial, n_folds: int) -> float:
    """The trial's wall time per fold (0 when unknown)."""
    return (_trial_seconds(trial) or 0.0) / max(1, n_folds)


def _trial_seconds(trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's wall time, start to end (None when unknown)."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds())


def _alone_share(
    trial: optuna.trial.FrozenTrial, members: Counter[Any], throughput: Mapping[str, float]
) -> float:
    """The share of a trial's wall time one run of it alone takes: 1 unless it trained in a population of K,
    whose time its K members shared. Trained alone at the probe's sequential rate a member takes
    ``speedup / K`` of it, ``speedup`` being what fusing K measured (the probe's nearest K at or below)."""
    k = members.get(trial.user_attrs.get("population"), 1)
    sequential = throughput.get("sequential")
    probed = [int(key[2:]) for key in throughput if key.startswith("K=") and int(key[2:]) <= k]
    if k <= 1 or not sequential or not probed:
        return 1.0
    speedup = throughput[f"K={max(probed)}"] / sequential
    return min(1.0, max(speedup, 1.0) / k)


def final_params(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> Candidate:
    """``trial`` as a candidate before re-evaluation: the parameters it ended with (nested overrides).

    A trial's Optuna parameters are the values it started with. Under PBT a trial copies another's weights
    and trains on with that trial's values perturbed; each exploit is in its user attribute ``pbt_exploits``,
    so the values it ended with are the last one's. The candidate then also keeps ``initial_params``, the
    number of exploits, and the epoch of the last one.
    """
    initial = space.overrides_from_params(trial.params)
    candidate = Candidate(
        trial=trial.number,
        params=initial,
        search_value=trial.value,
        best_epochs=list(trial.user_attrs.get("best_epochs", [])),
    )
    exploits = trial.user_attrs.get("pbt_exploits") or []
    if not exploits:
        return candidate
    last = exploits[-1]
    return replace(
        candidate,
        params=dict(last["params"]),
        initial_params=initial,
        pbt_exploits=len(exploits),
        params_from=f"its exploit at epoch {last['epoch']} (copying trial {last['source']})",
    )


def refit_winner(
    spec: ExperimentSpec,
    winner: Candidate,
    evaluator: Evaluator,
    events: Events,
    *,
    deadline: float | None = None,
    clock: Clock = system_clock,
) -> tuple[Refit, Trainer]:
    """Retrain the winner on train + validation for its median best epoch count (or, without
    ``search.refit``, on the training part as the search did); test once.

    Under a time budget (``deadline`` on ``clock``) the refit is planned from the winner's measured epoch
    time, scaled to the rows it trains on. When its epochs do not all end before the deadline, the winner as
    already trained is delivered instead: its first re-evaluation run, else its model from the search
    (``Evaluator.search_models``; as the budget cut it for a trial in ``cut_trials``), all trained on a
    fold's training part for the epochs that chose it. A refit of fewer epochs (as many as fit) only when
    none is at hand, and with not even one, a single epoch past the budget; the summary says which
    (``Refit.budget_note``)."""
    search = spec.search or SearchSpec()
    epochs = final_epochs(spec, winner)
    planned, note = epochs, None
    if deadline is not None and search.refit:
        bundle = evaluator.bundle(None)
        rows = len(bundle.X_train) + len(bundle.X_val)
        per_epoch = winner.epoch_seconds * rows / max(1, len(bundle.X_train))
        left = deadline - clock.monotonic()
        if math.isfinite(per_epoch) and per_epoch > 0:
            planned = min(epochs, max(0, int(left // per_epoch)))
        elif left <= 0:
            planned = 0
        if planned < epochs:
            takes = f"takes about {per_epoch:.2g} s" if math.isfinite(per_epoch) else "was never timed"
            note = (
                f"the budget left {max(left, 0.0):.1f} s for the refit and an epoch on train + validation "
                f"{takes}: "
            )
            rerun = next((run.trainer for run in winner.runs if run.trainer is not None), None)
            at_hand = rerun or evaluator.search_models.get(winner.trial)
            if at_hand is not None:
                where = (
                    "in its first re-evaluation run"
                    if rerun is not None
                    else "in the search, cut by the budget"
                    if winner.trial in evaluator.cut_trials
                    else "in the search"
                )
                note += f"no refit ({planned} of its {epochs} epochs would fit); delivered: the winner as "
                note += f"trained {where}"
                test_metrics = _test(at_hand, evaluator)
                events.phase(f"{note}; test: {fmt_metrics(test_metrics)}")
                return Refit(0, test_metrics, on_train_and_validation=False, budget_note=note), at_hand
            if planned >= 1:
                note += f"refit for {planned} of its {epochs} epochs (no model of it at hand)"
            else:
                planned = 1
                note += "no trained model at hand, so a refit of one epoch, past the budget"
    trainer = fit_final(spec, winner.params, evaluator, epochs=planned)
    test_metrics = _test(trainer, evaluator)
    what = (
        f"refit on train + validation for {planned} epochs"
        if search.refit
        else "trained on the training part"
    )
    events.phase(f"{what}{f' ({note})' if note else ''}; test: {fmt_metrics(test_metrics)}")
    return Refit(planned, test_metrics, on_train_and_validation=bool(search.refit), budget_note=note), trainer


def _test(trainer: Trainer, evaluator: Evaluator) -> dict[str, float]:
    bundle = evaluator.bundle(None)
    return trainer.evaluate(bundle.X_test, bundle.y_test)


def final_epochs(spec: ExperimentSpec, candidate: Candidate) -> int:
    """The epochs a final model of ``candidate`` trains for: the median of its best epoch counts."""
    return max(1, round(statistics.median(candidate.best_epochs or [spec.train.epochs])))


def fit_final(
    spec: ExperimentSpec,
    params: dict[str, Any],
    evaluator: Evaluator,
    *,
    epochs: int,
    seed: int | None = None,
    every_row: bool = False,
) -> Trainer:
    """A final model of the configuration ``params`` (training seed ``seed``, default the spec's): trained on
    train + validation for ``epochs`` under ``search.refit``, else on the training part as the search did;
    ``every_row``: on train + validation + test for ``epochs`` (``search.refit: all``, after the test)."""
    final = trial_spec(spec, params, seed=seed)
    bundle = evaluator.bundle(None)
    if every_row or (spec.search or SearchSpec()).refit:
        # The validated model is epoch `epochs` of a run of `train.epochs`: the refit replays that run's
        # schedule (the same horizon) and stops there. Squeezing the schedule into `epochs` decays the rate
        # sooner: on fortunes, early-stopped at epoch 3 of 30 under cosine, that refit scored a median 0.610
        # on held-back rows against 0.688 for this one (bench/text_pooling.py, three seeds).
        horizon = max(final.train.epochs, epochs)
        final_train = final.train.model_copy(update={"epochs": horizon, "early_stopping": None})
        final = final.model_copy(update={"train": final_train})
        trainer = evaluator.trainer(final, bundle, callbacks=[StopAfter(epochs)])
        parts = [bundle.X_train, bundle.X_val] + ([bundle.X_test] if every_row else [])
        targets = [bundle.y_train, bundle.y_val] + ([bundle.y_test] if every_row else [])
        trainer.fit((torch.cat(parts), torch.cat(targets)))
    else:
        trainer = evaluator.trainer(final, bundle)
        trainer.fit((bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val))
    return trainer


class StopAfter(Callback):
    """Stops a run after epoch ``epochs``, whatever its length (which sets its schedule)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        return epoch >= self.epochs


def export_delivered(
    layout: RunLayout,
    evaluator: Evaluator,
    *,
    winner: Trainer,
    delivered: Trainer,
    model_spec: AnyModelSpec,
    metadata: dict[str, Any],
    tested: Trainer | None = None,
) -> None:
    """Export the delivered model (the winner's refit, or the ensemble) to ``best/``; write the winner's
    training curve and the test predictions of ``tested`` (default ``delivered``: the model the test scored,
    which a delivered model trained on every row is not) for the report."""
    from tunelab.export import export_model

    bundle = evaluator.bundle(None)
    layout.final_history.write_text(json.dumps(winner.history.to_dict(), indent=2))
    write_test_predictions(layout.test_predictions, tested or delivered, bundle)
    export_model(
        layout.export,
        model=delivered.model,
        preprocessor=bundle.preprocessor,
        model_spec=model_spec,
        task=bundle.task,
        input_shape=bundle.input_shape,
        output_dim=output_dim(bundle, delivered.spec),
        metadata=metadata,
        example_input=bundle.X_test[:2],
    )


def fmt_metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in values.items())
