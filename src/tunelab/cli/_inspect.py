"""The commands that read a finished run: `tunelab dashboard`, `tunelab report` and `tunelab predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli._app import before_torch, err_console, user_errors


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
