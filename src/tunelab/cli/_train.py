"""`tunelab train`: one configuration, its run directory and its summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tunelab.cli._app import before_torch, fmt, out_console, user_errors


def train(
    spec_path: Annotated[
        Path, typer.Argument(metavar="SPEC", help="YAML experiment spec (data, model, train).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory. Default: runs/<spec name>.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.", min=1)] = None,
    seed: Annotated[
        int | None, typer.Option(help="Override the seed (data split, init and training).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Override train.device: auto, cpu, cuda or mps.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")] = False,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print JSON lines (one per epoch, then the summary).")
    ] = False,
    tensorboard: Annotated[
        Path | None,
        typer.Option(help="Also log every epoch to TensorBoard event files here (extra 'tensorboard')."),
    ] = None,
) -> None:
    """Train one configuration; write its run directory (spec, history, checkpoints, curves, metrics)."""
    before_torch()
    with user_errors():
        from tunelab.spec import load_spec, parse_spec

        spec = load_spec(spec_path)
        overrides: dict[str, Any] = {}
        if epochs is not None:
            overrides.setdefault("train", {})["epochs"] = epochs
        if device is not None:
            overrides.setdefault("train", {})["device"] = device
        if seed is not None:
            overrides["seed"] = seed
            overrides.setdefault("train", {})["seed"] = seed
        if overrides:
            merged = spec.model_dump(mode="json")
            for section, values in overrides.items():
                if isinstance(values, dict):
                    merged[section].update(values)
                else:
                    merged[section] = values
            spec = parse_spec(merged, source="the spec with command-line overrides")
        _run_train(
            spec,
            out or Path("runs") / spec.name,
            overwrite=overwrite,
            quiet=quiet,
            json_lines=json_lines,
            tensorboard=tensorboard,
        )


def _run_train(
    spec: Any, out: Path, *, overwrite: bool, quiet: bool, json_lines: bool, tensorboard: Path | None = None
) -> None:
    from tunelab.report import EpochPrinter, TensorBoardLogger
    from tunelab.run import train_experiment

    callbacks: list[Any] = [] if quiet else [EpochPrinter(n_epochs=spec.train.epochs, json_lines=json_lines)]
    if tensorboard is not None:
        callbacks.append(TensorBoardLogger(tensorboard))  # a missing extra fails here, before training
    result = train_experiment(spec, out_dir=out, callbacks=callbacks, overwrite=overwrite)
    if json_lines:
        sys.stdout.write(json.dumps({"event": "summary", **result.summary}) + "\n")
        return
    _print_summary(result.summary, out)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    table = Table(title=f"{summary['name']} — {summary['task']}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    for key in summary["val_metrics"]:
        val = summary["val_metrics"].get(key)
        test = summary["test_metrics"].get(key)
        table.add_row(key, fmt(val), fmt(test))
    out_console.print(table)
    training = summary["training"]
    out_console.print(
        f"epochs run: {training['epochs_run']} (best {training['best_epoch']}"
        f"{', stopped early' if training['stopped_early'] else ''}); "
        f"parameters: {summary['model']['n_parameters']:,}; time: {summary['elapsed_seconds']:.1f}s; "
        f"device: {training['device']}",
        highlight=False,
    )
    out_console.print(f"run directory: {out}", highlight=False)
