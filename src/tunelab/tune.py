"""Tune an experiment end to end: search, select honestly, refit, test once, export.

The protocol, written into every study's ``summary.json``:

1. **Search**: the sampler proposes configurations from ``search.space``; each trains on the training part
   and is scored on the validation part (or, with ``cv: K``, on each of K folds in turn, reporting after
   every epoch so the scheduler can stop it early fold by fold). It gets 80% of a wall-time budget.
2. **Selection**: the ``top_k`` configurations are trained again with ``n_seeds`` fresh training seeds on
   every fold; their mean, standard deviation and 95% t-interval are reported, and the best mean wins.
   Fresh seeds keep the estimate free of the search's own selection bias.
3. **Refit**: the winner is trained on train + validation for the median of its best epoch counts.
4. **Test**: the test part, set aside before anything else, is evaluated once, here.
5. **Export**: the refit model is exported with its preprocessing to ``run_dir/best``.

Everything lives in the run directory: ``study.db`` (Optuna's schema), ``spec.yaml``, per-trial checkpoints
while a trial runs, ``summary.json``, and ``best/``.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from tunelab.data import DataBundle, load_dataset, n_splits, prepare_data
from tunelab.errors import SpecError, TrainingError
from tunelab.models import build_model
from tunelab.run import write_test_predictions
from tunelab.search import (
    AshaScheduler,
    BaseScheduler,
    Decision,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    SearchSpec,
    StudySummary,
    TrialHandle,
    WriteBehind,
    make_sampler,
    merge_overrides,
    metric_direction,
    run_study,
)
from tunelab.search._fusion import choose_fusion
from tunelab.search._population_study import run_population_study
from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.train import Callback, Trainer, output_dim_for

__all__ = ["TuneResult", "tune_experiment"]

SEARCH_SHARE = 0.8  # of a wall-time budget; the rest is for re-evaluation and the refit


@dataclass
class TuneResult:
    run_dir: Path
    summary: dict[str, Any]
    study: StudySummary
    extra: dict[str, Any] = field(default_factory=dict)


def tune_experiment(
    spec: ExperimentSpec,
    *,
    out_dir: str | Path,
    resume: bool = False,
    storage: str | None = None,
    workers: int = 1,
    progress: Any = None,
    log: Any = None,
) -> TuneResult:
    """Run the whole protocol (module docstring) and return its summary; see ``tunelab tune --help``.

    ``workers`` > 1 runs that many search processes on the one storage (TPE with the constant liar), each with
    an equal share of the CPU threads; selection and the refit then run here.
    """
    started = time.monotonic()
    search = spec.search or SearchSpec()
    if not search.space:
        raise SpecError(
            "the spec has no search.space, so there is nothing to tune. Add for example\n"
            "search:\n  space:\n    train.lr: {float: [1e-4, 1e-2], log: true}\n"
            "or use `tunelab train` to train this one configuration."
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise SpecError(f"--workers must be a whole number from 1 to 64; got {workers!r}.")
    if workers > 1 and search.fused == "on":
        raise SpecError(
            "search.fused is 'on', but fused populations train in one search process; "
            "use --workers 1, or set search.fused to 'auto' or 'off'."
        )
    _check_storage_url(storage)
    run_dir = _open_run_dir(Path(out_dir), spec, resume=resume, storage=storage)
    storage_url = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    say = Events(progress, log)
    dataset = load_dataset(spec.data)
    plan = _plan(spec, search, run_dir, storage_url, workers, task=dataset.task)
    evaluator = _Evaluator(spec, plan.data_spec, dataset=dataset)
    plan.metric = search.metric or ("val_accuracy" if evaluator.task == "classification" else "val_rmse")
    plan.direction = metric_direction(plan.metric) if search.direction == "auto" else search.direction
    say(
        f"searching {len(search.search_space())} parameters with {search.sampler} and "
        f"{search.scheduler.name}; metric {plan.metric} ({plan.direction}); "
        + (f"{len(plan.folds)}-fold cross-validation" if search.cv else "holdout validation")
        + (f"; {workers} workers" if workers > 1 else "")
    )
    if resume and workers > 1:
        _retry_interrupted(storage_url, spec.name)
    study_summary = _search_in_workers(plan, evaluator, say) if workers > 1 else _search(plan, evaluator, say)
    shutil.rmtree(run_dir / "trials", ignore_errors=True)
    if study_summary.best_params is None:
        raise TrainingError(
            f"no trial completed ({study_summary.n_failed} failed, {study_summary.n_pruned} pruned); "
            "see the fail reasons with `optuna` on the run's study.db. Widen the budget, or narrow the "
            "search space to values that train (smaller learning rates, for example)."
        )
    study = optuna.load_study(study_name=spec.name, storage=storage_url)
    budget_s = search.budget_seconds
    deadline = None if budget_s is None else started + budget_s
    space = search.search_space()
    candidates = _reevaluate(
        study, space, spec, evaluator, plan.folds, plan.metric, plan.direction, search, deadline, say
    )
    refit = _refit(spec, candidates[0], evaluator, search, run_dir, say)
    summary = _summary(
        spec,
        search,
        plan.metric,
        plan.direction,
        study,
        study_summary,
        candidates,
        refit,
        plan.folds,
        started,
        storage_url,
    )
    summary["protocol"]["workers"] = workers
    summary["protocol"]["fusion"] = plan.fusion or {"fused": False, "reason": f"{workers} worker processes"}
    (run_dir / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2), encoding="utf-8")
    from tunelab.report import build_report

    say(f"report: {build_report(run_dir)}")
    return TuneResult(run_dir, summary, study_summary, extra={"trainer": refit["trainer"]})


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats become null; other objects their string form."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


class Events:
    """Where the protocol says what it does: a live progress display (``tunelab.report.make_progress``), a
    plain line callback, or nothing. Calling it with a message reports a phase."""

    def __init__(self, progress: Any = None, log: Any = None) -> None:
        self.progress, self.log = progress, log

    def __call__(self, message: str) -> None:
        if self.progress is not None:
            self.progress.phase(message)
        if self.log is not None:
            self.log(message)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.trial_started(number, params)

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        if self.progress is not None:
            self.progress.trial_reported(number, epoch, value)

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        if self.progress is not None:
            self.progress.trial_finished(number, state, value)
        if self.log is not None:
            shown = "" if value is None else f" {value:.4f}"
            self.log(f"trial {number:>3} {state}{shown}")


@dataclass
class _Plan:
    """Everything a search process needs (picklable, for worker processes)."""

    spec: ExperimentSpec
    data_spec: Any
    folds: list[int | None]
    run_dir: Path
    storage_url: str
    workers: int
    n_trials: int | None
    timeout_s: float | None
    metric: str = ""
    direction: str = "minimize"
    fusion: dict[str, Any] | None = None  # how the search trained its trials (fused or not, and why)


def _plan(
    spec: ExperimentSpec, search: SearchSpec, run_dir: Path, storage_url: str, workers: int, *, task: str
) -> _Plan:
    folds: list[int | None] = [None]
    data_spec = spec.data
    if search.cv:
        method = "stratified_kfold" if task == "classification" else "kfold"
        if data_spec.split.method == "timeseries" or task == "forecasting":
            method = "timeseries"
        data_spec = data_spec.model_copy(
            update={"split": data_spec.split.model_copy(update={"method": method, "n_folds": search.cv})}
        )
        folds = list(range(n_splits(data_spec)))
    budget_s = search.budget_seconds
    n_trials = search.n_trials
    if n_trials is None and budget_s is None and search.max_total_epochs is None:
        n_trials = 20
    timeout_s = None if budget_s is None else budget_s * SEARCH_SHARE
    return _Plan(spec, data_spec, folds, run_dir, storage_url, workers, n_trials, timeout_s)


def _search(plan: _Plan, evaluator: _Evaluator, say: Any, *, worker: int = 0) -> StudySummary:
    """One search process: ask the sampler, train, report, tell, until a budget is spent."""
    search = plan.spec.search or SearchSpec()
    space = search.search_space()
    sampler = make_sampler(
        search.sampler, seed=plan.spec.seed + worker, space=space, constant_liar=plan.workers > 1
    )
    if plan.workers > 1:
        # Several processes write to the storage: every change goes straight to it.
        storage: Any = optuna.storages.get_storage(plan.storage_url)
    elif plan.storage_url.startswith("sqlite:///"):
        storage = WriteBehind(plan.storage_url, flush_every=1, flush_interval_s=0.0)
    else:
        storage = plan.storage_url
    scheduler = _make_scheduler(search, plan.spec.train.epochs * len(plan.folds), plan.direction)
    if plan.workers == 1:
        # Fused populations where they apply and pay (see tunelab.search._fusion); the summary says which.
        fusion = choose_fusion(
            search,
            evaluator.bundle(plan.folds[0]),
            make_spec=lambda p: _trial_spec(plan.spec, p),
            seed=plan.spec.seed,
        )
        plan.fusion = fusion.to_dict()
        say(
            f"fused populations of {fusion.population_size}: {fusion.reason}"
            if fusion.fused
            else f"sequential trials: {fusion.reason}"
        )
        if fusion.fused:
            return run_population_study(
                lambda p: _trial_spec(plan.spec, p),
                evaluator,
                space,
                population_size=fusion.population_size,
                metric=plan.metric,
                direction=plan.direction,  # type: ignore[arg-type]
                folds=plan.folds,
                sampler=sampler,
                scheduler=scheduler,
                storage=storage,
                study_name=plan.spec.name,
                n_trials=plan.n_trials,
                timeout_s=plan.timeout_s,
                max_total_epochs=search.max_total_epochs,
                target=search.target,
                events=say,
            )
    return run_study(
        _Objective(plan.spec, evaluator, plan.folds, plan.metric, plan.direction, plan.run_dir, say),
        space,
        direction=plan.direction,  # type: ignore[arg-type]
        sampler=sampler,
        scheduler=scheduler,
        storage=storage,
        study_name=plan.spec.name,
        n_trials=plan.n_trials,
        timeout_s=plan.timeout_s,
        max_total_epochs=search.max_total_epochs,
        target=search.target,
        seed=plan.spec.seed + worker,
    )


def _search_in_workers(plan: _Plan, evaluator: _Evaluator, say: Any) -> StudySummary:
    """Run ``plan.workers`` search processes: this one and ``workers - 1`` spawned ones."""
    import multiprocessing
    import os

    threads = max(1, (os.cpu_count() or 1) // plan.workers)
    # Create the study before the workers start, so none of them races to create it.
    optuna.create_study(
        storage=plan.storage_url,
        study_name=plan.spec.name,
        direction=plan.direction,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(plan, index, threads), daemon=False)
        for index in range(1, plan.workers)
    ]
    for process in processes:
        process.start()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        summary = _search(plan, evaluator, say, worker=0)
    finally:
        torch.set_num_threads(previous)
        for process in processes:
            process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise TrainingError(
            f"{len(failed)} of {plan.workers - 1} worker processes failed (exit codes {failed}); the "
            "trials they finished are stored. Continue with `tunelab tune --resume --out "
            f"{plan.run_dir}`."
        )
    # The study as all workers left it.
    return _counts(optuna.load_study(study_name=plan.spec.name, storage=plan.storage_url), summary)


def _worker_main(plan: _Plan, index: int, threads: int) -> None:
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluator = _Evaluator(plan.spec, plan.data_spec)

    def line(message: str) -> None:
        print(f"[worker {index}] {message}", flush=True)

    _search(plan, evaluator, Events(log=line), worker=index)


def _counts(study: optuna.Study, local: StudySummary) -> StudySummary:
    from dataclasses import replace

    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return replace(
        local,
        n_complete=sum(t.state == TrialState.COMPLETE for t in trials),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        n_epochs=sum(max(t.intermediate_values, default=0) for t in trials),
    )


def _retry_interrupted(storage_url: str, name: str) -> None:
    """Trials left RUNNING by a killed run: mark them failed and queue their parameters again."""
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=storage_url)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _check_storage_url(url: str | None) -> None:
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SpecError(
            f"--storage '{url}' is not a database URL. Examples: sqlite:///study.db, "
            "postgresql+psycopg://user:password@host/db."
        ) from None
    if parsed.drivername.startswith("postgresql"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
            from tunelab.errors import MissingExtraError

            raise MissingExtraError("PostgreSQL storage", "postgres")


# --------------------------------------------------------------------------------------------- run directory


def _open_run_dir(run_dir: Path, spec: ExperimentSpec, *, resume: bool, storage: str | None) -> Path:
    has_study = (run_dir / "spec.yaml").exists() and (storage is not None or (run_dir / "study.db").exists())
    if resume:
        if not has_study:
            raise SpecError(
                f"there is no study to resume in '{run_dir}' (expected spec.yaml and study.db there). "
                "Check --out, or start a new study without --resume."
            )
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError(f"--out '{run_dir}' is a file; expected a directory for the study.")
    if has_study:
        raise SpecError(
            f"'{run_dir}' already holds a study; nothing was changed. Continue it with "
            f"`tunelab tune --resume --out {run_dir}`, or choose another --out."
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError(f"cannot create run directory '{run_dir}': {err}. Choose a writable --out.") from None
    (run_dir / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    return run_dir


def _make_scheduler(search: SearchSpec, max_epochs: int, direction: Any) -> BaseScheduler:
    cfg = search.scheduler
    if cfg.name == "none" or max_epochs <= cfg.min_epochs:
        return NoScheduler(direction=direction)
    if cfg.name == "median":
        return MedianStoppingScheduler(
            n_startup_trials=max(1, cfg.n_startup_trials), grace_epochs=cfg.min_epochs, direction=direction
        )
    kind = AshaScheduler if cfg.name == "asha" else HyperbandScheduler
    return kind(
        min_resource=cfg.min_epochs,
        max_resource=max_epochs,
        reduction_factor=cfg.reduction_factor,
        direction=direction,
    )


# ------------------------------------------------------------------------------------------------ training


class _Evaluator:
    """Trains one configuration on one fold; reads the source once and keeps each fold's tensors."""

    def __init__(self, spec: ExperimentSpec, data_spec: Any, *, dataset: Any = None) -> None:
        self.data_spec = data_spec
        self.seed = spec.seed
        self.dataset = dataset if dataset is not None else load_dataset(data_spec)
        self._bundles: dict[int | None, DataBundle] = {}
        self.task = self.bundle(None).task

    def bundle(self, fold: int | None) -> DataBundle:
        if fold not in self._bundles:
            spec = self.data_spec
            if fold is None and spec.split.method != "holdout" and spec.split.method != "timeseries":
                spec = spec.model_copy(update={"split": spec.split.model_copy(update={"method": "holdout"})})
            self._bundles[fold] = prepare_data(spec, seed=self.seed, fold=fold, dataset=self.dataset)
        return self._bundles[fold]

    @staticmethod
    def output_dim(spec: ExperimentSpec, bundle: DataBundle) -> int:
        n_targets = int(bundle.y_train.shape[1]) if bundle.y_train.ndim == 2 else 1
        return output_dim_for(bundle.task, bundle.n_classes, n_targets, spec.train.loss)

    def trainer(self, spec: ExperimentSpec, bundle: DataBundle, **kwargs: Any) -> Trainer:
        model = build_model(
            spec.model,
            input_shape=bundle.input_shape,
            output_dim=self.output_dim(spec, bundle),
            seed=spec.train.seed,
        )
        return Trainer(
            model,
            spec.train,
            task=bundle.task,
            n_classes=bundle.n_classes,
            target_scale=bundle.target_scale,
            **kwargs,
        )

    def score(
        self,
        spec: ExperimentSpec,
        fold: int | None,
        metric: str,
        *,
        callbacks: tuple[Callback, ...] = (),
        run_dir: Path | None = None,
        resume_from: Path | None = None,
    ) -> tuple[float, int]:
        """Train on the fold's training part; return the validation ``metric`` and the best epoch."""
        bundle = self.bundle(fold)
        trainer = self.trainer(spec, bundle, callbacks=callbacks, run_dir=run_dir)
        history = trainer.fit(
            (bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val), resume_from=resume_from
        )
        values = trainer.evaluate(bundle.X_val, bundle.y_val)
        key = metric.removeprefix("val_")
        if key not in values:
            raise SpecError(
                f"search.metric '{metric}' is not computed for this task; available: "
                f"{', '.join('val_' + k for k in values)}."
            )
        best_epoch = history.best_epoch or len(history.epochs)
        return float(values[key]), int(best_epoch)


def _trial_spec(
    base: ExperimentSpec, overrides: dict[str, Any], *, seed: int | None = None
) -> ExperimentSpec:
    """The base spec with a trial's parameters merged in (helper parameters ``_name`` left out)."""
    clean = {k: v for k, v in overrides.items() if not k.startswith("_")}
    merged = merge_overrides(base.model_dump(mode="json"), clean)
    merged.pop("search", None)
    if seed is not None:
        merged["train"]["seed"] = seed
    try:
        return parse_spec(merged, source="a sampled configuration")
    except SpecError as err:
        # A combination the space allows but the spec rejects: the trial fails, the study goes on.
        raise TrainingError(str(err)) from None


class _Reporter(Callback):
    """Reports the metric after each epoch to the trial and passes the scheduler's decision back."""

    def __init__(self, handle: TrialHandle, metric: str, offset: int, events: Events) -> None:
        self.handle, self.metric, self.offset, self.events = handle, metric, offset, events
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        if self.metric not in logs:
            raise SpecError(
                f"search.metric '{self.metric}' is not in the training logs; available: "
                f"{', '.join(k for k in logs if k.startswith('val_'))}."
            )
        decision = self.handle.report(self.offset + epoch, float(logs[self.metric]))
        self.events.trial_reported(self.handle.number, self.offset + epoch, float(logs[self.metric]))
        self.stopped = decision is Decision.STOP
        return self.stopped


class _Objective:
    def __init__(
        self,
        spec: ExperimentSpec,
        evaluator: _Evaluator,
        folds: list[int | None],
        metric: str,
        direction: str,
        run_dir: Path,
        say: Any,
    ) -> None:
        self.spec, self.evaluator, self.folds = spec, evaluator, folds
        self.metric, self.direction, self.run_dir, self.say = metric, direction, run_dir, say

    def __call__(self, handle: TrialHandle) -> float | None:
        self.say.trial_started(handle.number, handle.params)
        try:
            value = self._run(handle)
        except TrainingError:
            self.say.trial_finished(handle.number, "failed", None)
            raise
        self.say.trial_finished(handle.number, "pruned" if value is None else "complete", value)
        return value

    def _run(self, handle: TrialHandle) -> float | None:
        spec = _trial_spec(self.spec, handle.params)
        values: list[float] = []
        best_epochs: list[int] = []
        for index, fold in enumerate(self.folds):
            trial_dir = self.run_dir / "trials" / str(handle.number) / f"fold{index}"
            resume = self._checkpoint_to_resume(handle, index)
            reporter = _Reporter(handle, self.metric, offset=index * spec.train.epochs, events=self.say)
            value, best_epoch = self.evaluator.score(
                spec, fold, self.metric, callbacks=(reporter,), run_dir=trial_dir, resume_from=resume
            )
            if reporter.stopped:
                return None
            values.append(value)
            best_epochs.append(best_epoch)
        shutil.rmtree(self.run_dir / "trials" / str(handle.number), ignore_errors=True)
        mean = statistics.fmean(values)
        handle.set_attr("fold_values", values)
        handle.set_attr("best_epochs", best_epochs)
        return mean

    def _checkpoint_to_resume(self, handle: TrialHandle, fold_index: int) -> Path | None:
        original = handle.retry_of
        if original is None:
            return None
        path = self.run_dir / "trials" / str(original) / f"fold{fold_index}" / "checkpoint.pt"
        return path if path.exists() else None


# ----------------------------------------------------------------------------------- selection and refit


def _reevaluate(
    study: optuna.Study,
    space: Any,
    spec: ExperimentSpec,
    evaluator: _Evaluator,
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
        params = space.overrides_from_params(trial.params)
        record: dict[str, Any] = {
            "trial": trial.number,
            "params": params,
            "search_value": trial.value,
            "scores": [],
            "best_epochs": list(trial.user_attrs.get("best_epochs", [])),
        }
        for offset in range(1, search.n_seeds + 1):
            for fold in folds:
                if deadline is not None and time.monotonic() > deadline:
                    break  # the budget is spent: the search's own scores decide
                seeded = _trial_spec(spec, params, seed=spec.train.seed + offset)
                try:
                    score, best_epoch = evaluator.score(seeded, fold, metric)
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


def _refit(
    spec: ExperimentSpec,
    winner: dict[str, Any],
    evaluator: _Evaluator,
    search: SearchSpec,
    run_dir: Path,
    say: Any,
) -> dict[str, Any]:
    """Retrain the winner on train + validation for its median best epoch count; test once; export."""
    from tunelab.export import export_model

    epochs = max(1, round(statistics.median(winner["best_epochs"] or [spec.train.epochs])))
    final = _trial_spec(spec, winner["params"])
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


def _summary(
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
    return {
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
        "storage": storage_url,
        "export": "best/",
    }
