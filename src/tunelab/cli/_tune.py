"""`tunelab tune` and `tunelab demo`: a study, honest selection, the refit winner, and their summary."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tunelab.cli._app import before_torch, err_console, fmt, out_console, user_errors
from tunelab.clock import system_clock
from tunelab.layout import RunLayout


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
    budget: Annotated[str, typer.Option(help="Wall-time budget of the study.")] = "90s",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")] = False,
) -> None:
    """The main job on embedded defaults: a short study of MLPs on scikit-learn's digits, stored in SQLite."""
    before_torch()
    with user_errors():
        import optuna

        from tunelab.spec import parse_spec
        from tunelab.tune import tune_experiment

        spec = parse_spec(
            {**DEMO_SPEC, "search": {**DEMO_SPEC["search"], "budget": budget}}, source="the demo"
        )
        if not quiet:
            err_console.print(
                "[bold]tunelab demo[/]: a short study of MLPs on scikit-learn's handwritten digits "
                "(1,797 8x8 images, 10 classes), TPE + ASHA, stored in SQLite; then the best configuration "
                "is re-evaluated with fresh seeds, refit, tested once and exported."
            )
        if out.exists() and RunLayout(out).spec.exists():
            import shutil

            shutil.rmtree(out)  # the demo always starts fresh
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from tunelab.report import make_progress

        with make_progress("quiet" if quiet else "rich", metric="val_accuracy") as display:
            display.start(None, spec.search.budget_seconds if spec.search else None)
            result = tune_experiment(spec, out_dir=out, progress=display)
        _print_tune_summary(result.summary, out)


def tune(
    spec_path: Annotated[
        Path | None, typer.Argument(metavar="[SPEC]", help="YAML spec with a search section (or use --data).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Zero-config: a data path or built-in name.")] = None,
    target: Annotated[str | None, typer.Option(help="Zero-config: the target column of a table.")] = None,
    task: Annotated[
        str | None, typer.Option(help="classification, regression or forecasting (default: inferred).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Zero-config: mlp, cnn, rnn, lstm, gru, text (linear: forecasting only)."),
    ] = None,
    budget: Annotated[str | None, typer.Option(help="Wall-time budget: 60s, 10m, 1h.")] = None,
    n_trials: Annotated[int | None, typer.Option("--trials", help="Number of trials.", min=1)] = None,
    cv: Annotated[int | None, typer.Option(help="K-fold cross-validation inside the search.", min=2)] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the study storage (default: RUN_DIR/study.db). Its password is not kept: "
            "give the URL again to --resume, report and dashboard."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<name>).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split, the sampler and training.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the study in --out after a crash or stop.")] = False,
    workers: Annotated[int, typer.Option(help="Search processes sharing the study's storage.")] = 1,
    backend: Annotated[
        str,
        typer.Option(help="local (this machine's processes) or ray (workers as Ray actors; extra 'ray')."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Ray: the cluster (auto, HOST:PORT); default RAY_ADDRESS, else a local Ray."),
    ] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="Ray: CPUs of one worker actor.", min=0)] = 1.0,
    gpus_per_worker: Annotated[
        float, typer.Option(help="Ray: GPUs of one worker actor (a fraction shares a GPU).", min=0)
    ] = 0.0,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Ray: at most this many worker actors.", min=1)
    ] = None,
    max_failures: Annotated[
        int, typer.Option(help="Retries of a trial whose worker or node died (shared studies).", min=0)
    ] = 3,
    artifacts: Annotated[
        str | None,
        typer.Option(
            help="Shared studies: a directory every worker reaches for checkpoints (default: the database)."
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            help="Shared studies: seconds without a heartbeat before a worker's trials are taken back.", min=1
        ),
    ] = 20.0,
    progress: Annotated[
        str, typer.Option(help="Progress display: rich (live panel), json (JSON lines on stdout) or quiet.")
    ] = "rich",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Same as --progress quiet.")] = False,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            help="Write TensorBoard event files here: one folder per trial (per-epoch metric and parameters) "
            "and final/ (the refit). Extra 'tensorboard'."
        ),
    ] = None,
) -> None:
    """Search hyperparameters, select honestly, refit the winner, test it once, export it, write a report."""
    started = system_clock.monotonic()  # the budget counts from here: reading the data comes out of it
    before_torch()
    with user_errors():
        if tensorboard is not None:
            from tunelab.report import require_tensorboard

            require_tensorboard()  # fail before a long study, not after it
        spec = _tune_spec(spec_path, data, target, task, model, out, resume)
        search: dict[str, Any] = dict(spec.search.model_dump(mode="json")) if spec.search else {}
        for key, value in (("budget", budget), ("n_trials", n_trials), ("cv", cv)):
            if value is not None:
                search[key] = value
        raw = spec.model_dump(mode="json")
        raw["search"] = search
        if seed is not None:
            raw["seed"] = seed
            raw["train"]["seed"] = seed
        from tunelab.spec import parse_spec
        from tunelab.tune import tune_experiment

        spec = parse_spec(raw, source="the spec with command-line options")
        run_dir = out or Path("runs") / spec.name
        from tunelab.errors import SpecError
        from tunelab.execute import Distributed, RayBackend

        if backend not in ("local", "ray"):
            raise SpecError(f"--backend must be local or ray; got {backend!r}.")
        ray_backend = None
        if backend == "ray":
            if workers > 1:
                raise SpecError(
                    "--workers is for --backend local; on Ray, --max-concurrent caps the workers."
                )
            ray_backend = RayBackend(
                address=address,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
                max_concurrent=max_concurrent,
                max_failures=max_failures,
            )
        elif address is not None or max_concurrent is not None:
            raise SpecError("--address and --max-concurrent are for --backend ray.")
        shared_options = (max_failures, artifacts, grace) != (3, None, 20.0)
        distributed = (
            Distributed(grace_s=grace, max_failures=max_failures, artifacts=artifacts)
            if shared_options or ray_backend is not None
            else None
        )
        import optuna

        from tunelab.report import make_progress
        from tunelab.search import metric_direction

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        search_spec = spec.search
        metric = (search_spec.metric if search_spec else None) or "value"
        display = make_progress(
            "quiet" if quiet else progress,  # type: ignore[arg-type]  # checked by make_progress
            metric=metric,
            direction=metric_direction(metric) if metric != "value" else "maximize",
        )
        with display:
            display.start(search_spec.n_trials if search_spec else None, _budget_s(search_spec))
            result = tune_experiment(
                spec,
                out_dir=run_dir,
                resume=resume,
                storage=storage,
                workers=workers,
                progress=display,
                started=started,
                backend=ray_backend,
                distributed=distributed,
            )
        if tensorboard is not None:
            from tunelab.report import write_run_to_tensorboard

            write_run_to_tensorboard(run_dir, tensorboard, storage=storage)
        if progress == "json" and not quiet:
            sys.stdout.write(json.dumps({"event": "summary", **result.summary}) + "\n")
        else:
            _print_tune_summary(result.summary, run_dir)


def worker(
    storage: Annotated[str, typer.Option(help="The study's SQLAlchemy URL, password included.")],
    study: Annotated[str, typer.Option(help="The study's name (the spec's name).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="This worker's directory (default: runs/<study>/workers/<name>)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="This worker's name in the leases (default: worker@host:pid).")
    ] = None,
) -> None:
    """Join a running study from any machine: train its trials until its budget is spent, then exit.

    The study must have been started by `tunelab tune SPEC --storage URL` (a database server such as
    PostgreSQL). Its plan (spec, budgets, folds) is read from the study, the data from the spec's source,
    which this machine must reach. A worker that dies loses nothing: its trials resume from their last
    checkpoint on another worker once its heartbeats stop.
    """
    before_torch()
    with user_errors():
        import optuna

        from tunelab.execute import work, worker_name
        from tunelab.search import Events

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        me = name or worker_name()
        run_dir = out or Path("runs") / study / "workers" / me.replace("/", "_").replace(":", "_")

        def line(message: str) -> None:
            err_console.print(f"[{me}] {message}", highlight=False, soft_wrap=True)

        found = work(storage, study, Events(log=line), run_dir=run_dir, worker=me, index=os.getpid())
        summary = found.summary
        out_console.print(
            f"study {study}: {summary.n_complete} complete, {summary.n_pruned} pruned, "
            f"{summary.n_failed} failed ({summary.stop_reason}); this worker is done.",
            highlight=False,
        )


def _budget_s(search: Any) -> float | None:
    return None if search is None else search.budget_seconds


def _tune_spec(
    spec_path: Path | None,
    data: str | None,
    target: str | None,
    task: str | None,
    model: str | None,
    out: Path | None,
    resume: bool,
) -> Any:
    from tunelab.data import DataSpec, load_dataset, season_length
    from tunelab.errors import SpecError
    from tunelab.spec import load_spec, parse_spec
    from tunelab.tune import default_experiment

    if resume:
        if out is None:
            raise SpecError("--resume needs --out DIR: the run directory of the study to continue.")
        if spec_path is not None or data is not None:
            raise SpecError("--resume continues the study saved in --out; leave out SPEC and --data.")
        spec_file = RunLayout(out).spec
        return load_spec(spec_file) if spec_file.exists() else _no_study(out)
    if spec_path is not None and data is not None:
        raise SpecError(
            "give either SPEC or --data, not both (the spec's data section says where the data is)."
        )
    if spec_path is not None:
        spec = load_spec(spec_path)
        if spec.search is None:
            raise SpecError(
                f"spec file '{spec_path}' has no search section, so there is nothing to tune. Add "
                "`search: {space: {train.lr: {float: [1e-4, 1e-2], log: true}}}` or use `tunelab train`."
            )
        return spec
    if data is None:
        raise SpecError(
            "tell tunelab what to tune: a spec (`tunelab tune spec.yaml`) or data "
            "(`tunelab tune --data table.csv --target y`)."
        )
    data_section: dict[str, Any] = {"source": data}
    if target is not None:
        data_section["target"] = target
    if task is not None:
        data_section["task"] = task
    data_spec = DataSpec.model_validate(data_section)
    dataset = load_dataset(data_spec)
    name = (out.name if out is not None else Path(data).stem) or "tune"
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)
    experiment = default_experiment(
        data_section,
        kind=dataset.kind,
        model=model,
        name=safe,
        task=dataset.task,
        season=season_length(data_spec, dataset)[0],
        n_rows=dataset.n_rows,
    )
    return parse_spec(experiment, source="the default experiment")


def _no_study(out: Path) -> Any:
    from tunelab.errors import SpecError

    raise SpecError(
        f"there is no study to resume in '{out}' (no spec.yaml). Check --out, or start a new study."
    )


def _print_tune_summary(summary: dict[str, Any], out: Path) -> None:
    trials = summary["trials"]
    out_console.print(
        f"[bold]{summary['name']}[/]: {trials['complete']} complete, {trials['pruned']} pruned, "
        f"{trials['failed']} failed trials in {summary['elapsed_seconds']:.0f}s ({summary['stop_reason']})",
        highlight=False,
    )
    table = Table(title="candidates (fresh seeds)", header_style="bold")
    for column in ("trial", "search value", "mean ± std", "95% interval", "runs"):
        table.add_column(column, justify="right")
    for cand in summary["candidates"]:
        low, high = cand["ci95"]
        table.add_row(
            str(cand["trial"]),
            fmt(cand["search_value"]),
            f"{fmt(cand['mean'])} ± {fmt(cand['std'])}",
            f"[{fmt(low)}, {fmt(high)}]",
            str(cand["n"]),
        )
    out_console.print(table)
    out_console.print(
        f"best parameters (trial {summary['best_trial']}): {summary['best_params']}", highlight=False
    )
    if summary["importance"]:
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in list(summary["importance"].items())[:5])
        out_console.print(f"parameter importance: {ranked}", highlight=False)
    ensemble = summary.get("ensemble") or {}
    if ensemble:
        what = (
            f"an ensemble of {len(ensemble['members'])} models"
            if ensemble["delivered"]
            else "the single winner"
        )
        out_console.print(f"delivered: {what} (ensemble: {ensemble['reason']})", highlight=False)
    if summary.get("refit_budget"):
        out_console.print(f"the budget: {summary['refit_budget']}", highlight=False)
    tests = ", ".join(f"{k} {v:.4f}" for k, v in summary["test_metrics"].items())
    out_console.print(f"test (evaluated once): {tests}", highlight=False)
    if summary.get("refit_every_row"):
        out_console.print(f"refit on every row: {summary['refit_every_row']}", highlight=False)
    references = (summary.get("references") or {}).get("test")
    if references:
        shown = ", ".join(f"{name.replace('_', ' ')} {fmt(v.get('rmse'))}" for name, v in references.items())
        out_console.print(f"test rmse beside references: {shown}", highlight=False)
    if ensemble.get("delivered"):
        single = ", ".join(f"{k} {v:.4f}" for k, v in ensemble["single_winner_test_metrics"].items())
        out_console.print(f"the single winner's test: {single}", highlight=False)
    out_console.print(f"run directory: {out} (exported model in {out / 'best'})", highlight=False)


DEMO_SPEC: dict[str, Any] = {
    "name": "demo-digits",
    "data": {"source": "digits", "split": {"method": "holdout", "test_fraction": 0.2, "val_fraction": 0.2}},
    "model": {"type": "mlp", "hidden": [128], "init": "he_uniform"},
    "train": {
        "optimizer": "adamw",
        "epochs": 30,
        "batch_size": 64,
        "schedule": {"name": "cosine"},
        "early_stopping": {"monitor": "val_loss", "patience": 5, "restore_best": True},
    },
    "search": {
        "space": {
            "train.lr": {"float": [3e-4, 3e-2], "log": True},
            "train.weight_decay": {"float": [1e-6, 1e-2], "log": True},
            "_depth": {"int": [1, 2]},
            "model.hidden": {"per_layer": "_depth", "choice": [64, 128, 256, 512]},
            "model.dropout": {"float": [0.0, 0.4]},
        },
        "metric": "val_accuracy",
        "scheduler": {"name": "asha", "min_epochs": 2, "reduction_factor": 3},
        "top_k": 2,
        "n_seeds": 2,
    },
}
