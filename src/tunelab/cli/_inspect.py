"""The commands that read a run or a study: `tunelab dashboard`, `tunelab report`, `tunelab predict` and
`tunelab status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli._app import before_torch, err_console, out_console, user_errors


def dashboard(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `tunelab tune` (its study.db).")],
    port: Annotated[int, typer.Option(help="Port to serve on, on 127.0.0.1.", min=1, max=65535)] = 8080,
    storage: Annotated[
        str | None,
        typer.Option(
            help="The study's full URL when it is not RUN_DIR/study.db (e.g. PostgreSQL, password included)."
        ),
    ] = None,
) -> None:
    """Open optuna-dashboard on RUN_DIR's study at http://127.0.0.1:PORT/ (this machine only)."""
    before_torch()
    with user_errors():
        from tunelab.report import serve_dashboard

        def ready(url: str) -> None:
            err_console.print(
                f"optuna-dashboard on {url} (this machine only; it has no login). Ctrl-C to stop.",
                highlight=False,
            )

        try:
            serve_dashboard(run_dir, port=port, on_ready=ready, storage=storage)
        except KeyboardInterrupt:
            err_console.print("dashboard stopped.")


def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory made by `tunelab tune` or `tunelab train`.")
    ],
    storage: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the study, password included, for a run tuned with --storage "
            "(summary.json keeps it without the password)."
        ),
    ] = None,
) -> None:
    """(Re)generate RUN_DIR/report.html: a self-contained page with every plot, readable offline."""
    before_torch()
    with user_errors():
        from tunelab.report import build_report

        err_console.print(f"wrote {build_report(run_dir, storage=storage)}", highlight=False)


def predict(
    run_dir: Annotated[Path, typer.Argument(help="A tuned run directory (or its best/ export).")],
    data_path: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help="New inputs, as the model was trained on: a CSV or Parquet table; for images a folder of "
            "image files (one row per file, named by its path), an image file, an .npz or an IDX file; for "
            "sequences an .npz; for text also a .txt file (a text per line) or a folder of .txt files.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the predictions (CSV).")] = Path(
        "predictions.csv"
    ),
) -> None:
    """Apply the exported best model, with its preprocessing, to new inputs."""
    before_torch()
    with user_errors():
        from tunelab.data import read_new_inputs
        from tunelab.errors import DataError
        from tunelab.export import find_export, load

        if not data_path.exists():  # before the model is loaded: the cheaper mistake to report
            raise DataError(
                f"'{data_path}' does not exist. Give the new inputs to predict, as the model was trained "
                "on: a CSV or Parquet table, or for images a folder of image files, an image, an .npz or an "
                "IDX file."
            )
        exported = load(find_export(run_dir))
        x_key = ((exported.metadata.get("spec") or {}).get("data") or {}).get("x_key", "X")
        inputs = read_new_inputs(
            data_path,
            kind=exported.kind,
            input_shape=exported.input_shape,
            x_key=x_key,
            columns=exported.input_columns,
        )
        predictions = exported.predict_frame(inputs.data)
        if inputs.paths is not None:
            predictions.insert(0, "path", inputs.paths)
        try:
            predictions.to_csv(out, index=False)
        except OSError as err:
            from tunelab.errors import SpecError

            raise SpecError(f"cannot write predictions to '{out}': {err}. Choose a writable --out.") from None
        err_console.print(f"wrote {len(predictions):,} predictions to {out}", highlight=False)


def status(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="A run directory of `tunelab tune` (its study); or give --storage and --study."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="The study's SQLAlchemy URL, password included (e.g. a PostgreSQL database)."),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(help="The study's name (the spec's name); optional when the storage holds one study."),
    ] = None,
) -> None:
    """Show a study as it is now, from its storage: trials by state, the running ones, retries, artifacts."""
    with user_errors():
        from tunelab.errors import DataError
        from tunelab.layout import RunLayout
        from tunelab.storage import run_study_url, study_status

        if run_dir is None and storage is None:
            raise DataError(
                "nothing to show: give a run directory (tunelab status runs/x) or a study's storage "
                "(tunelab status --storage URL --study NAME)."
            )
        url = storage
        if run_dir is not None:
            layout = RunLayout(run_dir)
            url = run_study_url(layout, storage, command="tunelab status")
            if url is None:
                raise DataError(
                    f"'{run_dir}' holds no study (no study.db, no recorded storage). Give a run directory of "
                    "`tunelab tune`, or --storage URL --study NAME."
                )
            if study is None and layout.spec.is_file():
                import yaml

                study = (yaml.safe_load(layout.spec.read_text(encoding="utf-8")) or {}).get("name")
        if url is None:  # run_dir is None here, so storage was given
            raise DataError("no study storage given")
        _check_sqlite_file(url)
        shown = study_status(url, study)
        out_console.print(
            f"study {shown.name} at {shown.url} ({', '.join(shown.directions)})",
            highlight=False,
            soft_wrap=True,
        )
        states = ", ".join(f"{n} {state}" for state, n in shown.states.items() if n) or "no trials"
        out_console.print(f"trials: {shown.n_trials} ({states})", highlight=False, soft_wrap=True)
        if shown.best is not None:
            out_console.print(
                f"best: trial {shown.best[0]}, value {shown.best[1]:.6g}", highlight=False, soft_wrap=True
            )
        for trial in shown.running:
            since = trial.started.strftime("%Y-%m-%d %H:%M:%S") if trial.started else "?"
            again = f", retry of trial {trial.retry_of}" if trial.retry_of is not None else ""
            where = ""
            if trial.lease is not None:
                where = f", on {trial.lease.worker} (heartbeat {trial.lease.age_s:.1f} s ago)"
            reported = f"{trial.epochs} epoch(s) reported"
            out_console.print(
                f"running: trial {trial.number} since {since}, {reported}{again}{where}",
                highlight=False,
                soft_wrap=True,
            )
        if shown.retries:
            pairs = ", ".join(f"{new} <- {old}" for new, old in sorted(shown.retries.items()))
            out_console.print(
                f"retries ({len(shown.retries)}, new <- interrupted): {pairs}",
                highlight=False,
                soft_wrap=True,
            )
        for name, (node, held, age) in shown.workers.items():
            out_console.print(
                f"worker {name} on {node}: {held} trial(s) leased, last heartbeat {age:.1f} s ago",
                highlight=False,
                soft_wrap=True,
            )
        if shown.artifacts is None:
            out_console.print("artifacts: none stored in this database", highlight=False, soft_wrap=True)
        else:
            count, size = shown.artifacts
            out_console.print(
                f"artifacts: {count} in the database, {size:,} bytes", highlight=False, soft_wrap=True
            )


def _check_sqlite_file(url: str) -> None:
    """A SQLite URL naming a file that does not exist would create an empty database: refuse it instead."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from tunelab.errors import DataError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # connect_storage explains
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
        raise DataError(f"no study database at '{parsed.database}' ({url}): check the path.")
