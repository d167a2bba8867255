"""`tunelab compress`: a tuned run's winner made smaller and faster, searched, measured and exported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tunelab.cli._app import before_torch, err_console, out_console, user_errors


def compress(
    run_dir: Annotated[
        Path, typer.Argument(help="A `tunelab tune` run directory (its best/ is compressed).")
    ],
    budget: Annotated[str, typer.Option(help="Time for the whole command: 90s, 10m, 1h.")] = "10m",
    max_drop: Annotated[
        float,
        typer.Option(
            help="Validation score the pick may lose: points of accuracy / f1 / r2 (1.0 = 0.01), or percent "
            "of an error metric's value."
        ),
    ] = 1.0,
    prefer: Annotated[
        str, typer.Option(help="Pick the fastest ('latency') or the smallest ('size').")
    ] = "latency",
    batch: Annotated[
        str,
        typer.Option(help="Batch sizes latency is measured at, comma-separated; the largest is throughput."),
    ] = "1,256",
    threads: Annotated[int, typer.Option(help="Threads the runtime may use while timed.", min=1)] = 1,
    runtime: Annotated[
        str, typer.Option(help="Runtime the model is exported for and timed on: onnxruntime or torch.")
    ] = "onnxruntime",
    seed: Annotated[int, typer.Option(help="Seed of the search and the fine-tuning.", min=0)] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result.")] = False,
) -> None:
    """Compress a tuned model: slimming, sparsity, distillation and int8 quantization, searched for the best
    accuracy / latency / size trade-off; writes RUN_DIR/compressed/ (load and predict it like best/),
    RUN_DIR/compression/ (the front's models, the study) and RUN_DIR/compression.json."""
    before_torch()
    with user_errors():
        import optuna

        from tunelab.compress import compress_run
        from tunelab.errors import SpecError
        from tunelab.spec import CompressSpec

        try:
            batches = [int(part) for part in batch.split(",") if part.strip()]
        except ValueError:
            raise SpecError(
                f"--batch {batch!r} is not a list of batch sizes; expected whole numbers separated by "
                "commas, "
                "e.g. --batch 1,256"
            ) from None
        spec = CompressSpec(
            budget=budget,
            max_drop=max_drop,
            prefer=prefer,  # pydantic validates the value
            batches=batches,
            threads=threads,
            runtime=runtime,
            seed=seed,
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        result = compress_run(run_dir, spec, log=None if quiet else _log)
        _print(result.record, result.pick)


def _log(line: str) -> None:
    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


def _print(record: dict[str, Any], pick: Path | None) -> None:
    metric = record["metric"]
    batches = [str(b) for b in record["settings"]["batches"]]
    table = Table(title=f"compression front — {metric} on validation", header_style="bold")
    for column in ("model", f"val {metric}", *(f"ms @ {b}" for b in batches), "kB (deflated)", "what"):
        table.add_column(column, justify="left" if column in ("model", "what") else "right")
    original = record["original"]
    rows = [("original", original), *((f"trial {e['trial']}", e) for e in record["front"])]
    chosen = record["pick"]["trial"]
    for name, entry in rows:
        mark = " *" if entry.get("trial") is not None and entry["trial"] == chosen else ""
        table.add_row(
            name + mark,
            f"{entry['val_score']:.4f}",
            *(f"{entry['latency_ms'][b]:.3f}" for b in batches),
            f"{entry['deflated_bytes'] / 1e3:.1f}",
            "fp32 winner" if entry.get("trial") is None else entry["knobs"],
        )
    out_console.print(table)
    counts = record["candidates"]
    out_console.print(
        f"candidates: {counts['trained']} trained, {counts['screened']} stopped by the latency / size screen "
        f"({counts['screened_share']:.0%}); {record['elapsed_seconds']:.0f} s",
        highlight=False,
    )
    out_console.print(f"pick: {record['pick']['reason']}", highlight=False)
    if pick is not None:
        test = record["pick"]["test"]
        note = f" ({test['note']})" if test.get("note") else ""
        out_console.print(
            f"test {metric}: {test[metric]:.4f} (original {test['original']:.4f}){note}; exported to {pick}",
            highlight=False,
        )
