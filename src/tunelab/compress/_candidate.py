"""One compression candidate: its knobs, its structure (slimmed or not), its fine-tuning, its runtime file.

A candidate is the teacher slimmed to ``width`` (the kept units' weights copied), made ``sparsity`` sparse,
fine-tuned for ``epochs`` (with the teacher's outputs as soft targets when ``distill``), then exported for
its runtime and, for onnxruntime, quantized (``quant``). Latency and size depend only on the structure and
the quantization (and the sparsity, for the deflated size), so they are measured before any training.
"""

from __future__ import annotations

import copy
import io
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.compress._measure import (
    Latency,
    count_macs,
    deflated_bytes,
    file_bytes,
    time_onnx,
    time_torch,
)
from tunelab.compress._quantize import quantize_onnx
from tunelab.compress._slim import slim_model
from tunelab.compress._source import CompressSource
from tunelab.compress._sparsity import GradualSparsity, sparsity_of
from tunelab.errors import SpecError
from tunelab.export import OnnxModule, export_onnx
from tunelab.models import CNNSpec, MLPSpec, RNNSpec, count_parameters
from tunelab.train import Callback, DistillSpec

__all__ = ["Built", "Knobs", "build", "fine_tune", "measure", "runtime_file", "slimmable"]

_CALIBRATION_ROWS = 256


@dataclass(frozen=True)
class Knobs:
    """What a candidate changes. ``width`` 1.0 keeps the teacher's structure; ``quant`` none / dynamic /
    static (onnxruntime int8), ``fmt`` and ``calibration`` apply to static; ``temperature`` / ``alpha`` to
    distillation; ``epochs`` and ``lr`` to fine-tuning, which only a slimmed or sparse candidate needs."""

    width: float = 1.0
    criterion: str = "l1"
    sparsity: float = 0.0
    quant: str = "none"
    fmt: str = "qoperator"
    calibration: str = "minmax"
    keep_first: bool = False
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 1
    lr: float = 1e-3

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Knobs:
        known = {name: params[name] for name in cls.__dataclass_fields__ if name in params}
        return cls(**known)

    @property
    def trains(self) -> bool:
        return self.width < 1.0 or self.sparsity > 0.0

    @property
    def training(self) -> tuple[Any, ...]:
        """What the fine-tuned weights depend on (everything but the quantization)."""
        distill = (self.temperature, self.alpha) if self.distill else None
        return (self.width, self.criterion, self.sparsity, distill, self.epochs, self.lr)

    @property
    def structure(self) -> tuple[float, str, str]:
        """What latency depends on: the width and the quantization (its format for static; whether the
        first layer stays float)."""
        if self.quant == "none":
            return (self.width, "none", "")
        first = "+first-float" if self.keep_first else ""
        return (self.width, self.quant, (self.fmt if self.quant == "static" else "") + first)

    def describe(self) -> str:
        parts = [f"width {self.width:g}"]
        if self.sparsity:
            parts.append(f"sparsity {self.sparsity:g}")
        if self.trains:
            parts.append(f"{self.epochs} epoch(s) at lr {self.lr:.2g}")
            if self.distill:
                parts.append(f"distilled (T {self.temperature:.2g}, alpha {self.alpha:.2g})")
        if self.quant != "none":
            parts.append(
                f"int8 {self.quant}"
                + (f" {self.fmt} {self.calibration}" if self.quant == "static" else "")
                + (" (first layer float)" if self.keep_first else "")
            )
        return ", ".join(parts)


@dataclass
class Built:
    """A candidate made: its torch model (fp32, for export and reloading), the spec it was built from, and
    the file its runtime runs (``None`` for the torch runtime)."""

    knobs: Knobs
    model: nn.Module
    spec: Any
    file: Path | None
    parameters: int
    notes: list[str] = field(default_factory=list)


def slimmable(source: CompressSource) -> bool:
    """Whether the teacher is a tunelab-built family that slimming can narrow."""
    return isinstance(source.model_spec, MLPSpec | CNNSpec | RNNSpec)


def build(source: CompressSource, knobs: Knobs) -> Built:
    """The candidate's structure with the teacher's weights (the kept units' slices when slimmed)."""
    if knobs.width < 1.0:
        if source.model_spec is None or not slimmable(source):
            raise SpecError(
                "slimming needs a tunelab-built model (mlp, cnn, rnn); this run's model is "
                f"{type(source.teacher).__name__}. Fix: search widths [1.0] only (quantization still "
                "applies)."
            )
        spec, model = slim_model(
            source.teacher,
            source.model_spec,
            knobs.width,
            criterion=knobs.criterion,  # type: ignore[arg-type]
            input_shape=source.input_shape,
            output_dim=source.output_dim,
        )
    else:
        spec, model = source.model_spec, copy.deepcopy(source.teacher)  # type: ignore[assignment]
    return Built(knobs, model.cpu().eval(), spec, None, count_parameters(model))


class _Deadline(Callback):
    """Ends fine-tuning at once when the search's time is up (the model as trained so far is kept)."""

    def __init__(self, out_of_time: Callable[[], bool]) -> None:
        self.out_of_time = out_of_time
        self.cut = False

    def on_batch_end(self, epoch: int, step: int) -> bool | None:
        self.cut = self.cut or self.out_of_time()
        return self.cut


def fine_tune(
    source: CompressSource,
    built: Built,
    *,
    teacher_outputs: Callable[[], torch.Tensor],
    out_of_time: Callable[[], bool],
    seed: int,
) -> None:
    """Train ``built.model`` in place: ``knobs.epochs`` epochs on the training rows at ``knobs.lr`` (cosine),
    its sparsity reached gradually over the first half, distilled from the teacher when asked."""
    knobs = built.knobs
    if not knobs.trains:
        return
    callbacks: list[Callback] = []
    if knobs.sparsity > 0.0:
        end = max(1, math.ceil(knobs.epochs / 2))
        callbacks.append(
            GradualSparsity(
                built.model, knobs.sparsity, scope="global", start_epoch=1, end_epoch=end, updates_per_epoch=8
            )
        )
    deadline = _Deadline(out_of_time)
    callbacks.append(deadline)
    distill = DistillSpec(temperature=knobs.temperature, weight=knobs.alpha) if knobs.distill else None
    spec = source.train_spec.model_copy(
        update={
            "epochs": knobs.epochs,
            "lr": knobs.lr,
            "schedule": source.train_spec.schedule.model_copy(update={"name": "cosine", "min_lr": 0.0}),
            "early_stopping": None,
            "distill": distill,
            "augment": None if distill is not None else source.train_spec.augment,
            "seed": seed,
        }
    )
    trainer = source.new_trainer(built.model, spec, callbacks)
    train = (source.bundle.X_train, source.bundle.y_train)
    trainer.fit(train, None, teacher=teacher_outputs() if distill is not None else None)
    built.model = trainer.model.cpu().eval()
    if deadline.cut:
        built.notes.append("fine-tuning cut by the time budget")
    if knobs.sparsity > 0.0:
        built.notes.append(f"sparsity reached: {sparsity_of(built.model):.3f}")


def runtime_file(source: CompressSource, built: Built, directory: Path, *, onnx: bool) -> None:
    """Export ``built.model`` for the onnxruntime runtime (quantized as its knobs say) into ``directory``;
    sets ``built.file``. The torch runtime (``onnx=False``) needs no file."""
    if not onnx:
        return
    directory.mkdir(parents=True, exist_ok=True)
    example = source.bundle.X_train[:2].cpu()
    fp32 = directory / "fp32.onnx"
    export_onnx(copy.deepcopy(built.model).eval(), example, fp32)
    knobs = built.knobs
    if knobs.quant == "none":
        built.file = fp32
        return
    calibration = None
    if knobs.quant == "static":
        rows = torch.randperm(
            len(source.bundle.X_train), generator=torch.Generator().manual_seed(source.experiment.seed)
        )[:_CALIBRATION_ROWS]
        calibration = source.bundle.X_train[rows].cpu().numpy().astype(np.float32)
    built.file = quantize_onnx(
        fp32,
        directory / "int8.onnx",
        mode=knobs.quant,  # type: ignore[arg-type]
        calibration=calibration,
        method=knobs.calibration,  # type: ignore[arg-type]
        # Per channel for convolutions (static); per tensor for dynamic MatMul / LSTM, whose per-channel int8
        # drifts on CPUs without VNNI (AVX2's saturating 16-bit sums): tests/compress/test_quantize.py.
        per_channel=knobs.quant == "static",
        keep_first=knobs.keep_first,
        fmt=knobs.fmt,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Footprint:
    """What a candidate costs: its runtime's latency per batch size, its file's bytes (and deflated, the
    size objective: what storing and shipping it costs, the only size a sparse model saves), its
    parameters."""

    latencies: tuple[Latency, ...]
    bytes: int
    deflated_bytes: int
    parameters: int
    macs: int  # multiply-adds of one sample, fp32 structure (int8 and sparsity leave the count as it is)

    def latency_ms(self, batch: int) -> float:
        for latency in self.latencies:
            if latency.batch == batch:
                return latency.median_ms
        raise KeyError(batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latencies": [latency.to_dict() for latency in self.latencies],
            "bytes": self.bytes,
            "deflated_bytes": self.deflated_bytes,
            "parameters": self.parameters,
            "macs": self.macs,
        }


def measure(
    source: CompressSource,
    built: Built,
    *,
    batches: list[int],
    threads: int,
    runs: int = 30,
    latencies: tuple[Latency, ...] | None = None,
) -> Footprint:
    """Latency on the runtime (unless ``latencies`` measured for the same structure are given) and size."""
    if latencies is None:
        if built.file is not None:
            latencies = tuple(
                time_onnx(built.file, source.input_shape, batches=tuple(batches), threads=threads, runs=runs)
            )
        else:
            latencies = tuple(
                time_torch(
                    built.model, source.input_shape, batches=tuple(batches), threads=threads, runs=runs
                )
            )
    if built.file is not None:
        size, deflated = file_bytes(built.file), deflated_bytes(built.file)
    else:
        size, deflated = _torch_bytes(built.model)
    macs = count_macs(built.model, source.bundle.X_train[:1].cpu())
    return Footprint(latencies, size, deflated, built.parameters, macs)


def _torch_bytes(model: nn.Module) -> tuple[int, int]:
    buffer = io.BytesIO()
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, buffer)
    data = buffer.getvalue()
    return len(data), len(zlib.compress(data, 9))


def score(source: CompressSource, built: Built, x: torch.Tensor, y: torch.Tensor) -> float:
    """The run's metric of the candidate as its runtime runs it, on ``(x, y)``."""
    return source.scorer(outputs(source, built, x), y)


def outputs(source: CompressSource, built: Built, x: torch.Tensor) -> torch.Tensor:
    """Raw outputs of the candidate as its runtime runs it (the quantized graph for onnxruntime)."""
    if built.file is None:
        return source.outputs(built.model, x)
    module = OnnxModule(built.file, threads=None)
    with torch.no_grad():
        return torch.cat([module(x[i : i + 1024].cpu()) for i in range(0, len(x), 1024)]).float()
