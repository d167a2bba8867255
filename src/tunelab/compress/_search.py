"""The compression search: one multi-objective study (validation score, latency, size) on the study loop.

Latency and size depend only on a candidate's structure and quantization, so the executor measures them on the
untrained candidate first; a candidate that the current front dominates on both, even were it as accurate as
the teacher (up to ``max_drop``: the user's own tolerance), is stopped before any fine-tuning (recorded as
pruned, ``screened``). The teacher itself is on that front: a candidate slower and larger than the original
never trains. Survivors fine-tune, are exported for their runtime (quantized there), scored on the
validation rows as the runtime runs them, and told with their measured latency and size.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunelab.compress._candidate import (
    Built,
    Footprint,
    Knobs,
    build,
    fine_tune,
    measure,
    runtime_file,
    score,
    slimmable,
)
from tunelab.compress._source import CompressSource, allowed_drop
from tunelab.compress._sparsity import apply_masks, magnitude_masks
from tunelab.search import BaseExecutor, Outcome, SearchSpace, TrialHandle
from tunelab.search.space import Choice, Float, Int
from tunelab.spec import CompressSpec

__all__ = ["CompressionExecutor", "Entry", "compression_space", "first_candidates"]


@dataclass
class Entry:
    """A measured model: a completed candidate, or the original (``trial`` None)."""

    trial: int | None
    knobs: Knobs
    score: float
    footprint: Footprint
    built: Built | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def latency(self, batch: int) -> float:
        return self.footprint.latency_ms(batch)

    @property
    def size(self) -> int:
        return self.footprint.deflated_bytes


def _options(source: CompressSource, spec: CompressSpec, *, onnx: bool) -> tuple[list[float], list[str]]:
    """The widths and quantization modes open to this teacher: widths only for a tunelab-built model,
    quantization only on onnxruntime, and only dynamic (weights) for a text model, whose input holds token
    ids that static quantization would round with the activations."""
    widths = sorted(set(spec.widths), reverse=True) if slimmable(source) else [1.0]
    text = source.bundle.text is not None
    quant: list[str] = [
        q for q in dict.fromkeys(spec.quantization) if (onnx or q == "none") and not (text and q == "static")
    ] or ["none"]
    return widths, quant


def compression_space(source: CompressSource, spec: CompressSpec, *, onnx: bool) -> SearchSpace:
    """The knobs a study varies for this teacher (distillation when asked, batch-norm ranking only for a
    model with batch norm, the static format and calibration only for static quantization)."""
    widths, quant = _options(source, spec, onnx=onnx)
    criteria = ["l1", "l2"] + (["bn"] if getattr(source.model_spec, "batch_norm", False) else [])
    lr = source.train_spec.lr
    nodes: dict[str, Any] = {
        "width": Choice(widths),
        "criterion": Choice(criteria) if len(widths) > 1 else "l1",
        "sparsity": Choice(sorted(set(spec.sparsities))),
        "quant": Choice(quant),
        "epochs": Int(1, spec.max_epochs),
        "lr": Float(lr / 30.0, lr, log=True),
    }
    if set(quant) - {"none"}:
        nodes["keep_first"] = Choice([True, False], when={"quant": [q for q in quant if q != "none"]})
    if "static" in quant:
        nodes["fmt"] = Choice(["qoperator", "qdq"], when={"quant": "static"})
        nodes["calibration"] = Choice(["minmax", "entropy", "percentile"], when={"quant": "static"})
    if spec.distill:
        nodes["distill"] = Choice([True, False])
        nodes["temperature"] = Float(1.0, 8.0, when={"distill": True})
        nodes["alpha"] = Float(0.1, 0.9, when={"distill": True})
    return SearchSpace(nodes)


def first_candidates(source: CompressSource, spec: CompressSpec, *, onnx: bool) -> list[dict[str, Any]]:
    """Candidates tried first, each from a different corner of the trade-off: post-training int8 of the
    teacher (dynamic, and static in both formats), the teacher slimmed to half its width and fine-tuned for 5
    epochs (fp32 and dynamic int8, one training), and to a quarter, 3 epochs, all at the winner's learning
    rate.

    Slimmed units are ranked by batch-norm scale where the model has batch norm: on the tuned Fashion-MNIST
    CNN, half its width kept by |gamma| starts at 0.43 validation accuracy and by L1 norm at 0.11, and after
    two epochs reaches 0.913 against 0.906. Distillation is left to the search: in such short fine-tuning
    it slowed recovery there (0.872 after two epochs with T = 4, weight 0.5)."""
    widths, quant = _options(source, spec, onnx=onnx)
    space = compression_space(source, spec, onnx=onnx)
    criterion = "bn" if getattr(source.model_spec, "batch_norm", False) else "l1"
    firsts: list[dict[str, Any]] = []

    def add(**params: Any) -> None:
        flat: dict[str, Any] = {
            "criterion": criterion,
            "sparsity": min(spec.sparsities),
            "epochs": min(3, spec.max_epochs),
            "lr": source.train_spec.lr,
            **params,
        }
        if spec.distill:
            flat["distill"] = False
        if flat["quant"] != "none":
            flat["keep_first"] = True
        if flat["quant"] == "static":
            flat.setdefault("calibration", "minmax")
        if len(widths) == 1:
            flat.pop("criterion")
        firsts.append(flat)

    if "dynamic" in quant:
        add(width=1.0, quant="dynamic")
    if "static" in quant:
        add(width=1.0, quant="static", fmt="qdq")
        add(width=1.0, quant="static", fmt="qoperator")
    if 0.5 in widths:  # one fine-tuning (5 epochs) serves both: the weights are reused
        add(width=0.5, quant="none", epochs=min(5, spec.max_epochs))
        if "dynamic" in quant:
            add(width=0.5, quant="dynamic", epochs=min(5, spec.max_epochs))
    if 0.25 in widths:
        add(width=0.25, quant="none")
    for params in firsts:
        space.check_params(params)
    return firsts


class CompressionExecutor(BaseExecutor):
    """Trains compression candidates one at a time for :func:`tunelab.search.run_study` (three objectives:
    validation score, latency at the throughput batch in ms, deflated bytes)."""

    def __init__(
        self,
        source: CompressSource,
        spec: CompressSpec,
        workdir: Path,
        original: Entry,
        *,
        onnx: bool,
        out_of_time: Callable[[], bool],
        log: Callable[[str], None],
    ) -> None:
        self.source, self.spec, self.workdir, self.original = source, spec, workdir, original
        self.onnx, self.out_of_time, self.log = onnx, out_of_time, log
        self.allowed = allowed_drop(spec, source.metric, source.reference)
        self.completed: list[Entry] = []
        self.screened: list[int] = []
        self._latencies: dict[tuple[float, str, str], tuple[Any, ...]] = {}
        self._teacher_outputs: torch.Tensor | None = None
        self._trained: dict[tuple[Any, ...], tuple[int, dict[str, torch.Tensor], list[str]]] = {}

    # ------------------------------------------------------------------ the screen

    def acceptable(self, value: float) -> bool:
        """Whether a validation score is within ``max_drop`` of the reference."""
        reference = self.source.reference
        if self.source.scorer.direction == "maximize":
            return value >= reference - self.allowed
        return value <= reference + self.allowed

    def dominated_by(self, footprint: Footprint) -> Entry | None:
        """An acceptable model (the original, or a completed candidate) at least as fast and as small as
        ``footprint``, and strictly better on one: the candidate could not join the front it would need."""
        batch = self.spec.throughput_batch
        latency, size = footprint.latency_ms(batch), footprint.deflated_bytes
        for entry in [self.original, *self.completed]:
            if not self.acceptable(entry.score):
                continue
            no_worse = entry.latency(batch) <= latency and entry.size <= size
            if no_worse and (entry.latency(batch) < latency or entry.size < size):
                return entry
        return None

    # ------------------------------------------------------------------ one trial

    def run_trial(self, handle: TrialHandle) -> Outcome:
        started = time.perf_counter()
        knobs = Knobs.from_params(handle.params)
        directory = self.workdir / "trials" / str(handle.number)
        built = build(self.source, knobs)
        # A candidate that does not train is its own probe: its file and measurements are final.
        probe_dir = directory / "probe" if knobs.trains else directory
        probe, probe_file = self._probe(built, probe_dir)
        blocker = self.dominated_by(probe)
        record = {"knobs": knobs.describe(), "footprint": probe.to_dict()}
        if blocker is not None:
            shutil.rmtree(directory, ignore_errors=True)
            self.screened.append(handle.number)
            by = "the original" if blocker.trial is None else f"candidate {blocker.trial}"
            self.log(f"  {handle.number:>3} screened ({knobs.describe()}): {by} is as fast and as small")
            return Outcome.pruned(screened_by=by, **record)
        if knobs.trains:
            shutil.rmtree(probe_dir, ignore_errors=True)
            self._fine_tuned(built, handle.number)
            runtime_file(self.source, built, directory, onnx=self.onnx)
            footprint = measure(
                self.source,
                built,
                batches=self.spec.batches,
                threads=self.spec.threads,
                latencies=probe.latencies,
            )
        else:
            built.file, footprint = probe_file, probe
        value = score(self.source, built, self.source.bundle.X_val, self.source.bundle.y_val)
        entry = Entry(
            handle.number, knobs, value, footprint, built, time.perf_counter() - started, built.notes
        )
        self.completed.append(entry)
        batch = self.spec.throughput_batch
        self.log(
            f"  {handle.number:>3} {self.source.metric} {value:.4f}  {entry.latency(batch):8.3f} ms@{batch}  "
            f"{footprint.deflated_bytes / 1e3:9.1f} kB  ({knobs.describe()}; {entry.seconds:.0f} s)"
        )
        return Outcome.complete(
            value, entry.latency(batch), float(footprint.deflated_bytes), notes=built.notes, **record
        )

    def _fine_tuned(self, built: Built, number: int) -> None:
        """Fine-tune ``built`` in place, or give it the weights an earlier candidate with the same training
        knobs ended with: fine-tuning is seeded by the study's seed alone, so they are the weights it would
        reach, and one training serves every quantization of it (fp32, dynamic, static...)."""
        key = built.knobs.training
        if key in self._trained:
            trial, state, notes = self._trained[key]
            built.model.load_state_dict(state)
            built.notes.extend(
                [*notes, f"fine-tuned weights of candidate {trial} reused (same training knobs)"]
            )
            return
        fine_tune(
            self.source,
            built,
            teacher_outputs=self.teacher_outputs,
            out_of_time=self.out_of_time,
            seed=self.spec.seed,
        )
        if built.knobs.trains and not any("cut by the time budget" in note for note in built.notes):
            state = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
            self._trained[key] = (number, state, list(built.notes))

    @property
    def latencies_by_structure(self) -> dict[tuple[float, str, str], tuple[Any, ...]]:
        """The latencies measured so far, one record per structure (``Knobs.structure``)."""
        return dict(self._latencies)

    def _probe(self, built: Built, directory: Path) -> tuple[Footprint, Path | None]:
        """Latency and size of the candidate's structure before training, and the file measured: the
        untrained (sliced) model, made as sparse as it will be, exported and quantized; latency measured
        once per structure."""
        knobs = built.knobs
        probe = Built(knobs, built.model, built.spec, None, built.parameters)
        if knobs.sparsity > 0.0:
            probe.model = copy.deepcopy(built.model)
            apply_masks(probe.model, magnitude_masks(probe.model, knobs.sparsity, scope="global"))
        runtime_file(self.source, probe, directory, onnx=self.onnx)
        cached = self._latencies.get(knobs.structure)
        footprint = measure(
            self.source, probe, batches=self.spec.batches, threads=self.spec.threads, latencies=cached
        )
        self._latencies[knobs.structure] = footprint.latencies
        return footprint, probe.file

    def teacher_outputs(self) -> torch.Tensor:
        """The teacher's raw outputs on the training rows, computed once (inputs are not augmented)."""
        if self._teacher_outputs is None:
            self._teacher_outputs = self.source.outputs(self.source.teacher, self.source.bundle.X_train)
        return self._teacher_outputs
