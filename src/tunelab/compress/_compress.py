"""``compress_run``: a tuned run's winner → a searched front of smaller / faster models → the pick, exported.

Steps, within one time budget (the search gets ``SEARCH_SHARE`` of it; the rest re-measures the front, tests
the pick once and exports): read the run (``open_source``), measure the original, search (``run_study`` over a
``CompressionExecutor``), take the Pareto front, measure it again beside the original (interleaved), pick,
test the pick, export. Everything is written to a work directory first; ``RUN_DIR/compressed/`` (the pick, an
export like ``best/``), ``RUN_DIR/compression/`` (the study, the front's exports) and
``RUN_DIR/compression.json`` replace earlier ones only at the end, so a failure leaves the run as it was.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.clock import Clock, system_clock
from tunelab.compress._candidate import Built, Knobs, measure, runtime_file, score
from tunelab.compress._measure import Latency, int8_capability, time_onnx, time_torch
from tunelab.compress._search import (
    CompressionExecutor,
    Entry,
    compression_space,
    first_candidates,
)
from tunelab.compress._select import Pick, choose, pareto_front, remeasure
from tunelab.compress._source import CompressSource, allowed_drop, open_source
from tunelab.errors import MissingExtraError, TunelabError
from tunelab.export import export_model, export_onnx_model
from tunelab.layout import json_safe
from tunelab.search import StudyBudget, run_study
from tunelab.spec import CompressSpec

__all__ = [
    "COMPRESSED",
    "COMPRESSION",
    "COMPRESSION_JSON",
    "SEARCH_SHARE",
    "CompressionResult",
    "compress_run",
]

COMPRESSED = "compressed"
COMPRESSION = "compression"
COMPRESSION_JSON = "compression.json"
SEARCH_SHARE = 0.75
_WORK = ".compress-work"


@dataclass(frozen=True)
class CompressionResult:
    """What ``compress_run`` wrote: ``record`` is ``compression.json``; ``pick`` the export directory of the
    chosen model (None when no compressed model qualifies and the winner stays)."""

    run_dir: Path
    record: dict[str, Any]
    pick: Path | None


def compress_run(
    run_dir: str | Path,
    spec: CompressSpec | None = None,
    *,
    log: Callable[[str], None] | None = None,
    clock: Clock = system_clock,
    storage: str | None = None,
) -> CompressionResult:
    """Compress the winner of the ``tunelab tune`` run in ``run_dir`` (see the module docstring).

    Raises :class:`~tunelab.errors.DataError` for a directory without a finished run and exported model,
    :class:`~tunelab.errors.SpecError` for an impossible ``max_drop``, :class:`MissingExtraError` when the
    onnxruntime runtime is asked for without the ``onnx`` extra; the run directory is untouched then.
    ``storage``: the tuning study's database URL, password included, for rebuilding the run's report when
    the study is not in the run directory.
    """
    spec = spec if spec is not None else CompressSpec()
    say = log if log is not None else (lambda _line: None)
    started = clock.monotonic()
    deadline = started + spec.budget_seconds
    onnx = spec.runtime == "onnxruntime"
    if onnx:
        _require_onnxruntime()
    source = open_source(run_dir, spec)
    root = source.run_dir
    work = root / _WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        record, pick_dir = _compress(source, spec, work, onnx=onnx, say=say, clock=clock, deadline=deadline)
        record["elapsed_seconds"] = round(clock.monotonic() - started, 2)
        (work / "out" / COMPRESSION_JSON).write_text(
            json.dumps(json_safe(record), indent=2), encoding="utf-8"
        )
        _publish(work / "out", root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _rebuild_report(root, say, storage)
    return CompressionResult(root, record, root / COMPRESSED if pick_dir else None)


def _rebuild_report(root: Path, say: Callable[[str], None], storage: str | None) -> None:
    """The run's HTML report again, now with its compression sections."""
    from tunelab.report import build_report

    try:
        say(f"report: {build_report(root, storage=storage)}")
    except TunelabError as error:  # e.g. a study on a database whose password the summary does not keep
        say(f"report not rebuilt ({error}); run `tunelab report {root} --storage URL`")


def _require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime import quantization  # noqa: F401
    except ImportError:
        raise MissingExtraError("compression measured on onnxruntime (int8 quantization)", "onnx") from None


def _compress(
    source: CompressSource,
    spec: CompressSpec,
    work: Path,
    *,
    onnx: bool,
    say: Callable[[str], None],
    clock: Clock,
    deadline: float,
) -> tuple[dict[str, Any], bool]:
    batches = sorted(set(spec.batches))
    throughput = max(batches)
    maximize = source.scorer.direction == "maximize"
    say(
        f"teacher: {source.metric} {source.teacher_val_score:.4f} on validation; "
        f"reference {source.reference:.4f} "
        f"({source.reference_is}); max drop {allowed_drop(spec, source.metric, source.reference):.4g}"
    )
    original_built = Built(Knobs(), copy.deepcopy(source.teacher), source.model_spec, None, 0)
    original_built.parameters = sum(p.numel() for p in original_built.model.parameters())
    runtime_file(source, original_built, work / "original", onnx=onnx)
    original = Entry(
        None,
        Knobs(),
        source.reference,
        measure(source, original_built, batches=batches, threads=spec.threads),
        original_built,
    )
    say(
        f"original: {original.latency(throughput):.3f} ms at batch {throughput}, "
        f"{original.size / 1e3:.1f} kB deflated ({spec.runtime}, {spec.threads} thread(s))"
    )
    search_deadline = clock.monotonic() + SEARCH_SHARE * max(0.0, deadline - clock.monotonic())
    executor = CompressionExecutor(
        source,
        spec,
        work,
        original,
        onnx=onnx,
        out_of_time=lambda: clock.monotonic() >= search_deadline,
        log=say,
    )
    space = compression_space(source, spec, onnx=onnx)
    (work / "out").mkdir()
    study = run_study(
        executor,
        space,
        directions=["maximize" if maximize else "minimize", "minimize", "minimize"],
        storage=f"sqlite:///{work / 'study.db'}",
        study_name="compress",
        budget=StudyBudget(deadline=search_deadline, clock=clock),
        seed=spec.seed,
        first_trials=first_candidates(source, spec, onnx=onnx),
    )
    front = pareto_front(executor.completed, batch=throughput, maximize=maximize)
    say(f"search: {study.n_complete} trained, {len(executor.screened)} screened; front of {len(front)}")

    def timer(entry: Entry) -> list[Latency]:
        built = _built(entry)
        if built.file is not None:
            return time_onnx(built.file, source.input_shape, batches=tuple(batches), threads=spec.threads)
        return time_torch(built.model, source.input_shape, batches=tuple(batches), threads=spec.threads)

    measured = remeasure([*front, original], timer)
    # Measured again, a front model may turn out dominated by another: the front is what holds on these.
    front, original = pareto_front(measured[:-1], batch=throughput, maximize=maximize), measured[-1]
    pick = choose(
        front,
        original,
        acceptable=executor.acceptable,
        prefer=spec.prefer,
        batches=batches,
        metric=source.metric,
        maximize=maximize,
    )
    say(f"pick: {pick.reason}")
    record = _record(source, spec, study, executor, front, original, pick, onnx=onnx)
    out = work / "out"
    for entry in front:
        _export(source, entry, out / COMPRESSION / "front" / str(entry.trial), spec=spec, test=None)
    if pick.entry is not None:
        bundle = source.bundle
        test = score(source, _built(pick.entry), bundle.X_test, bundle.y_test)
        original_test = score(source, _built(original), bundle.X_test, bundle.y_test)
        record["pick"]["test"] = {source.metric: test, "original": original_test}
        said = f"test {source.metric}: {test:.4f} (original {original_test:.4f})"
        if source.saw_test:
            record["pick"]["test"]["note"] = IN_SAMPLE_TEST
            said += f"; {IN_SAMPLE_TEST}"
        say(said)
        _export(source, pick.entry, out / COMPRESSED, spec=spec, test=test)
    shutil.move(str(work / "study.db"), str(out / COMPRESSION / "study.db"))
    return record, pick.entry is not None


IN_SAMPLE_TEST = (
    "not held out: the run's delivered model was trained on the test rows too (search.refit: all), so "
    "compare the pick with the original here, not with the run's test score"
)


def _built(entry: Entry) -> Built:
    if entry.built is None:
        raise RuntimeError(
            f"candidate {entry.trial} was measured but not kept"
        )  # the executor keeps them all
    return entry.built


def _export(
    source: CompressSource, entry: Entry, path: Path, *, spec: CompressSpec, test: float | None
) -> None:
    built = _built(entry)
    metadata: dict[str, Any] = {
        "compression": {
            "trial": entry.trial,
            "knobs": entry.knobs.describe(),
            f"val_{source.metric}": entry.score,
            **({f"test_{source.metric}": test} if test is not None else {}),
            "footprint": entry.footprint.to_dict(),
            "teacher": str(source.export_dir),
        }
    }
    common: dict[str, Any] = {
        "preprocessor": source.exported.preprocessor,
        "model_spec": built.spec,
        "task": source.bundle.task,
        "input_shape": source.input_shape,
        "output_dim": source.output_dim,
        "metadata": metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if built.file is not None and entry.knobs.quant != "none":
        export_onnx_model(path, onnx_file=built.file, example_input=source.bundle.X_val[:8], **common)
    else:
        export_model(path, model=built.model, onnx=built.file is not None, **common)


def _entry_record(entry: Entry, batches: list[int]) -> dict[str, Any]:
    return {
        "trial": entry.trial,
        "knobs": entry.knobs.describe(),
        "params": dict(vars(entry.knobs)),
        "val_score": entry.score,
        "latency_ms": {str(b): entry.latency(b) for b in batches},
        **entry.footprint.to_dict(),
        "seconds": round(entry.seconds, 2),
        "notes": entry.notes,
    }


def _record(
    source: CompressSource,
    spec: CompressSpec,
    study: Any,
    executor: CompressionExecutor,
    front: list[Entry],
    original: Entry,
    pick: Pick,
    *,
    onnx: bool,
) -> dict[str, Any]:
    batches = sorted(set(spec.batches))
    completed = executor.completed
    n_tried = len(completed) + len(executor.screened)
    record: dict[str, Any] = {
        "run": str(source.run_dir),
        "metric": source.metric,
        "direction": source.scorer.direction,
        "reference": {"value": source.reference, "is": source.reference_is},
        "teacher_val_score": source.teacher_val_score,
        "max_drop": spec.max_drop,
        "allowed_drop": allowed_drop(spec, source.metric, source.reference),
        "settings": spec.model_dump(mode="json"),
        "runtime": spec.runtime,
        "threads": spec.threads,
        "cpu": int8_capability(),
        "original": _entry_record(original, batches),
        "candidates": {
            "trained": len(completed),
            "screened": len(executor.screened),
            "screened_share": len(executor.screened) / n_tried if n_tried else 0.0,
            "stop_reason": study.stop_reason,
        },
        "front": [_entry_record(entry, batches) for entry in front],
        "all": [_entry_record(entry, batches) for entry in completed],
        "int8_vs_fp32": _int8_speedups(executor, batches) if onnx else [],
        "pick": {
            "trial": pick.entry.trial if pick.entry is not None else None,
            "reason": pick.reason,
            "slower_than_original": list(pick.slower_than_original),
        },
    }
    return record


def _int8_speedups(executor: CompressionExecutor, batches: list[int]) -> list[dict[str, Any]]:
    """For every width measured both ways: int8's speed against the same structure in fp32, per batch."""
    rows = []
    measured = executor.latencies_by_structure
    for (width, quant, fmt), latencies in sorted(measured.items()):
        if quant == "none" or (width, "none", "") not in measured:
            continue
        fp32 = {lat.batch: lat.median_ms for lat in measured[(width, "none", "")]}
        int8 = {lat.batch: lat.median_ms for lat in latencies}
        rows.append(
            {
                "width": width,
                "mode": quant,
                "format": fmt or None,
                "speedup": {str(b): fp32[b] / int8[b] for b in batches if b in fp32 and b in int8},
            }
        )
    return rows


def _publish(out: Path, root: Path) -> None:
    """Replace the run's earlier compression results with ``out``'s, one rename each."""
    for name in (COMPRESSED, COMPRESSION, COMPRESSION_JSON):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if (out / name).exists():
            (out / name).rename(target)
