"""`tune_experiment`: the whole protocol (see the `tunelab.tune` package docstring) over one run directory."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna

from tunelab.clock import Clock, system_clock
from tunelab.data import load_dataset
from tunelab.errors import SpecError, TrainingError
from tunelab.execute import (
    Distributed,
    Evaluator,
    RayBackend,
    SearchResult,
    publish_plan,
    run_search,
    search_in_workers,
    search_on_ray,
    trial_spec,
)
from tunelab.layout import RunLayout, json_safe
from tunelab.search import Direction, Events, SearchSpec, StudyEvents, metric_direction
from tunelab.spec import ExperimentSpec
from tunelab.storage import (
    connect_storage,
    hide_password,
    opened_study,
    password_hidden,
    record_storage,
    retry_interrupted,
    server_database,
    study_snapshot,
)
from tunelab.train import denormals_flushed
from tunelab.tune._ensemble import ENSEMBLE_RULE, choose_ensemble, refit_on_every_row
from tunelab.tune._interval import INTERVAL_METHOD
from tunelab.tune._plan import TimeBudget, make_plan
from tunelab.tune._references import forecast_references
from tunelab.tune._result import Refit, TuneProtocol, TuneResult
from tunelab.tune._select import export_delivered, reevaluate, refit_winner
from tunelab.tune._simplest import SIMPLEST_RULE, choose_simplest

__all__ = ["tune_experiment"]


@denormals_flushed()  # from the start, so that the torch threads loading the data start flushing
def tune_experiment(
    spec: ExperimentSpec,
    *,
    out_dir: str | Path,
    resume: bool = False,
    storage: str | None = None,
    workers: int = 1,
    progress: StudyEvents | None = None,
    log: Callable[[str], None] | None = None,
    clock: Clock = system_clock,
    started: float | None = None,
    backend: RayBackend | None = None,
    distributed: Distributed | None = None,
) -> TuneResult:
    """Run the whole protocol (module docstring) and return what it found; see ``tunelab tune --help``.

    ``workers`` > 1 runs that many search processes on the one storage (TPE with the constant liar), each with
    an equal share of the CPU threads; selection and the refit then run here. ``progress`` (a live display,
    ``tunelab.report.make_progress``) and ``log`` (called with a line per phase and finished trial) hear what
    happens. ``search.budget`` is one deadline on ``clock``, counted from this call: the search ends at 80%
    of it, and re-evaluation and the refit start only what fits in the rest. ``started``: the reading of
    ``clock`` the budget counts from, if earlier than this call (the command's start, before it read the
    data to choose a zero-config experiment).

    A study in a database server's ``storage`` (PostgreSQL), or on ``backend`` (:class:`RayBackend`: workers
    as Ray actors), is distributed: the plan is published in the study so that ``tunelab worker`` processes
    join it from any machine, every trial holds a lease kept alive by heartbeats, populations checkpoint
    every epoch into the database (or ``distributed.artifacts``), and a dead worker's trials resume from
    their checkpoint elsewhere, up to ``distributed.max_failures`` times (:class:`Distributed`).
    """
    budget = TimeBudget(clock, clock.monotonic() if started is None else started)
    search = spec.search or SearchSpec()
    if not search.space:
        raise SpecError(
            "the spec has no search.space, so there is nothing to tune. Add for example\n"
            "search:\n  space:\n    train.lr: {float: [1e-4, 1e-2], log: true}\n"
            "or use `tunelab train` to train this one configuration."
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise SpecError(f"--workers must be a whole number from 1 to 64; got {workers!r}.")
    budget = TimeBudget(clock, budget.start, search.budget_seconds)
    _check_storage_url(storage)
    layout = _open_run_dir(RunLayout(out_dir), spec, resume=resume, storage=storage)
    storage_url = storage or layout.local_storage_url
    events = Events(progress, log)
    dataset = load_dataset(spec.data)
    metric = search.metric or ("val_accuracy" if dataset.task == "classification" else "val_rmse")
    direction: Direction = metric_direction(metric) if search.direction == "auto" else search.direction
    plan = make_plan(
        spec,
        layout,
        storage_url,
        task=dataset.task,
        metric=metric,
        direction=direction,
        workers=workers,
        budget=budget,
    )
    if backend is not None or distributed is not None or server_database(storage_url):
        settings = distributed or Distributed()
        if backend is not None:
            settings = replace(settings, max_failures=backend.max_failures)
        plan = replace(plan, distributed=settings)
        publish_plan(plan)
    evaluator = Evaluator(spec, plan.data_spec, dataset=dataset)
    events.phase(
        f"searching {len(search.search_space())} parameters with {search.sampler} and "
        f"{search.scheduler.name}; metric {metric} ({direction}); "
        + (f"{len(plan.folds)}-fold cross-validation" if search.cv else "holdout validation")
        + (f"; {workers} workers" if workers > 1 else "")
    )
    if backend is not None:
        found = search_on_ray(plan, backend, events)
    elif workers > 1:
        if (
            resume and plan.distributed is None
        ):  # one process would retry them as it opens the study; several share it, so here, once
            with opened_study(storage_url, spec.name) as study:
                retry_interrupted(study)
        found = search_in_workers(plan, evaluator, events)
    else:
        found = run_search(plan, evaluator, events, clock=clock)
    shutil.rmtree(layout.trials, ignore_errors=True)
    if found.summary.best_params is None:
        raise TrainingError(
            f"no trial completed ({found.summary.n_failed} failed, {found.summary.n_pruned} pruned); "
            "see the fail reasons with `optuna` on the run's study.db. Widen the budget, or narrow the "
            "search space to values that train (smaller learning rates, for example)."
        )
    # Selection and the summary only read the study: a copy in memory, with no connection held meanwhile.
    study = study_snapshot(storage_url, spec.name)
    candidates = reevaluate(
        study,
        search.search_space(),
        spec,
        evaluator,
        folds=plan.folds,
        metric=metric,
        direction=direction,
        deadline=budget.deadline,
        events=events,
        clock=clock,
        throughput=found.fusion.throughput if found.fusion.fused else None,
    )
    selection = None
    if search.select == "simplest":
        candidates, selection = choose_simplest(spec, candidates, evaluator, plan, events)
    refit = refit_winner(spec, candidates[0], evaluator, events, deadline=budget.deadline, clock=clock)
    delivered = choose_ensemble(
        spec, candidates, refit, evaluator, plan, budget.deadline, events, clock=clock
    )
    delivered, tested_refit = refit_on_every_row(
        spec, delivered, refit[0], evaluator, budget.deadline, events, clock=clock
    )
    refit = (tested_refit, refit[1])
    final = trial_spec(spec, candidates[0].params)
    export_delivered(
        layout,
        evaluator,
        winner=refit[1],
        delivered=delivered.trainer,
        model_spec=delivered.ensemble_spec or final.model,
        tested=delivered.tested,
        metadata={
            "spec": final.model_dump(mode="json"),
            "test_metrics": delivered.test_metrics,
            "trained_on_test": refit[0].on_every_row,
            **({"ensemble": delivered.choice.to_dict()} if delivered.ensemble_spec else {}),
        },
    )
    references = None
    if evaluator.task == "forecasting":
        events.phase("references: seasonal naive and lagged ridge on the validation and test parts")
        references = forecast_references(
            plan.data_spec,
            evaluator.dataset,
            evaluator.bundle(None),
            refit=refit[0].on_train_and_validation,
            winner_validation={metric.removeprefix("val_"): candidates[0].value or math.nan},
            winner_test={k: v for k, v in delivered.test_metrics.items() if k in ("rmse", "mae")},
        )
    result = TuneResult(
        run_dir=layout.root,
        name=spec.name,
        task=evaluator.task,
        metric=metric,
        direction=direction,
        candidates=candidates,
        refit=refit[0],
        study=found.summary,
        elapsed_seconds=budget.elapsed(),
        protocol=_protocol(spec, search, plan.folds, refit[0], workers, found),
        storage=hide_password(storage_url),  # a summary is shared; a database password is not
        importance=_importance(study),
        trainer=delivered.trainer,
        ensemble=delivered.choice,
        references=references,
        selection=selection,
    )
    layout.summary.write_text(json.dumps(json_safe(result.to_dict()), indent=2), encoding="utf-8")
    from tunelab.report import build_report

    events.phase(f"report: {build_report(layout.root, storage=storage)}")
    if spec.compress is not None:  # its own budget, after the tuning's: the winner is delivered either way
        from tunelab.compress import compress_run

        events.phase(f"compress: the winner, within {spec.compress.budget}")
        compress_run(layout.root, spec.compress, log=events.phase, clock=clock, storage=storage)
    return result


def _protocol(
    spec: ExperimentSpec,
    search: SearchSpec,
    folds: list[int | None],
    refit: Refit,
    workers: int,
    found: SearchResult,
) -> TuneProtocol:
    pbt = None
    if search.scheduler.name == "pbt":
        cfg = search.scheduler
        pbt = (
            f"population-based training: every {cfg.perturbation_interval} epochs the bottom "
            f"{cfg.quantile_fraction:.0%} of a population copied the weights of a member of the top and "
            "trained on with its hyperparameters perturbed. PBT's hyperparameter schedule is not replayed: "
            "re-evaluation and the refit train each candidate from scratch with the values it ended with "
            "(its final values; best_params), not the sequence of values it went through"
        )
    return TuneProtocol(
        validation="holdout" if folds == [None] else f"{len(folds)}-fold cross-validation",
        sampler=search.sampler,
        scheduler=search.scheduler.name,
        reevaluation=f"top {search.top_k} re-trained with {search.n_seeds} fresh seeds per fold; "
        f"mean ± std and {INTERVAL_METHOD}; the winner: "
        + (SIMPLEST_RULE if search.select == "simplest" else "the best mean"),
        refit=(
            f"winner retrained on train + validation for {refit.epochs} epochs"
            if refit.on_train_and_validation
            else "no refit: the winner as trained on the training part"
        )
        + (f" ({refit.budget_note})" if refit.budget_note else "")
        + (f"; refit on every row: {refit.every_row_note}" if refit.every_row_note else ""),
        test="the test part, set aside first, evaluated once after the refit (the winner's and the "
        "ensemble's, after the choice between them)"
        + (
            "; the delivered model was then trained on every row, test rows included, so the test score "
            "is its recipe's, trained without them"
            if refit.on_every_row
            else ""
        ),
        workers=workers,
        fusion=found.fusion.to_dict(),
        pbt=pbt,
        ensemble=ENSEMBLE_RULE if search.ensemble else "off (search.ensemble: false)",
    )


def _importance(study: optuna.Study) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials in some regimes": the figures say so themselves
            ranked = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return {}  # fewer than two complete trials, or a single-valued space
    return {k: round(v, 4) for k, v in ranked.items()}


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
    # Open it now, before any file is written or data loaded, so a wrong URL (server down, wrong port or
    # password, no such database) is a clear error on every path (worker processes included), not a
    # traceback after a half-made run directory.
    connect_storage(url).engine.dispose()


def _open_run_dir(layout: RunLayout, spec: ExperimentSpec, *, resume: bool, storage: str | None) -> RunLayout:
    run_dir = layout.root
    has_study = layout.has_study(storage)
    if resume:
        recorded = layout.recorded_storage()
        if not has_study and recorded is not None and layout.spec.exists():
            again = (
                "URL`, URL being that same URL with its password (tunelab does not keep passwords)."
                if password_hidden(recorded)
                else f"{recorded}`."
            )
            raise SpecError(
                f"the study in '{run_dir}' is stored in {recorded} (recorded in {layout.storage_record.name} "
                "there), not in a study.db beside it, so --resume needs that storage again: resume with "
                f"`tunelab tune --resume --out {run_dir} --storage {again}"
            )
        if not has_study:
            raise SpecError(
                f"there is no study to resume in '{run_dir}' (expected spec.yaml and study.db there). "
                "Check --out, or start a new study without --resume."
            )
        return layout
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
    layout.spec.write_text(spec.to_yaml(), encoding="utf-8")
    if storage is not None:
        record_storage(layout, storage)
    return layout
