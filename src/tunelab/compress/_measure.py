"""Measure, never assume: a model's bytes, multiply-adds and latency, and the CPU's int8 capability.

Latency is measured on the runtime the model is deployed with (onnxruntime for an ``.onnx`` file, torch for a
module): a fixed thread count, warm-up runs, then at least ``runs`` timed calls read with
``time.perf_counter``; a :class:`Latency` keeps the median and interquartile range, at batch 1 (a request's
latency) and at a throughput batch. onnxruntime is the optional extra ``onnx``, imported when used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tunelab.errors import DataError, MissingExtraError, SpecError

__all__ = [
    "Latency",
    "Runtime",
    "count_macs",
    "deflated_bytes",
    "file_bytes",
    "int8_capability",
    "time_onnx",
    "time_torch",
]

Runtime = Literal["onnxruntime", "torch"]

_CHUNK_BYTES = 1 << 20
_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


# ---------------------------------------------------------------------------------------------------- sizes


def file_bytes(path: str | Path) -> int:
    """Size of the file at ``path`` in bytes (what a download or a disk holds uncompressed)."""
    return _existing_file(path).stat().st_size


def deflated_bytes(path: str | Path) -> int:
    """Size in bytes of the file at ``path`` once compressed with zlib at level 9, read in 1 MiB chunks.

    Zeros compress away, so this is how a sparse model's file shrinks when it is stored or shipped compressed
    (a zip or a gzip'd download); a dense float file shrinks little (~7-10%).
    """
    compressor = zlib.compressobj(level=9)
    total = 0
    with _existing_file(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"'{path}' is not a file. Expected a model file (an exported .onnx or .pt); check the path."
        )
    return path


# ------------------------------------------------------------------------------------------------ compute


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``model`` on ``example`` (its whole batch; callers pass batch 1).

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions; FLOPs / 2),
    in eval mode without gradients; the model's train / eval modes are as they were afterwards. Elementwise
    work (activations, normalization, pooling, biases) is not counted.

    Recurrent layers (``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``) are counted analytically instead, since the
    counter sees nothing of the CPU's fused LSTM kernel (torch 2.13 counts 0 for it, while it decomposes GRU
    and RNN into counted ``addmm``): per sample, time step, layer and direction ``G * H * (I + P)`` with
    ``G`` = 4 (LSTM), 3 (GRU) or 1 (RNN) gates, ``H`` the hidden size, ``I`` the layer's input size and ``P``
    the recurrent state's size (``proj_size`` if set, else ``H``), plus ``P * H`` for an LSTM's projection.
    """
    from torch.utils.flop_counter import FlopCounterMode

    modes = {module: module.training for module in model.modules()}
    counter = FlopCounterMode(display=False)
    starts: list[int] = []
    recurrent = {"counted": 0, "analytic": 0}

    def before(module: nn.RNNBase, args: tuple[Any, ...]) -> None:
        starts.append(counter.get_total_flops())

    def after(module: nn.RNNBase, args: tuple[Any, ...], output: Any) -> None:
        recurrent["counted"] += counter.get_total_flops() - starts.pop()
        recurrent["analytic"] += _recurrent_macs(module, args[0])

    handles = []
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return (counter.get_total_flops() - recurrent["counted"]) // 2 + recurrent["analytic"]


def _recurrent_macs(module: nn.RNNBase, inputs: Any) -> int:
    """Multiply-adds of one call of a recurrent layer on ``inputs`` (a tensor or a PackedSequence)."""
    if isinstance(inputs, nn.utils.rnn.PackedSequence):
        sample_steps = int(inputs.data.shape[0])  # one row per (sample, step) actually computed
    elif inputs.dim() == 2:  # unbatched (L, I)
        sample_steps = int(inputs.shape[0])
    else:
        sample_steps = int(inputs.shape[0] * inputs.shape[1])
    gates = _RECURRENT_GATES[module.mode]
    hidden = module.hidden_size
    state = module.proj_size or hidden
    directions = 2 if module.bidirectional else 1
    per_step = 0
    for layer in range(module.num_layers):
        layer_input = module.input_size if layer == 0 else state * directions
        per_step += directions * (gates * hidden * (layer_input + state) + module.proj_size * hidden)
    return sample_steps * per_step


# ------------------------------------------------------------------------------------------------ latency


@dataclass(frozen=True)
class Latency:
    """Latency of one model at one batch size on one runtime, over ``runs`` timed calls.

    ``median_ms`` and ``iqr_ms`` (75th less 25th percentile) are milliseconds per call of ``batch`` samples;
    ``samples_per_second`` is ``batch / median``. ``threads`` is the intra-op thread count it ran with.
    """

    runtime: Runtime
    batch: int
    threads: int
    runs: int
    median_ms: float
    iqr_ms: float
    samples_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict of plain ints, floats and strings."""
        return dataclasses.asdict(self)


def time_onnx(
    path: str | Path,
    input_shape: tuple[int, ...],
    *,
    batches: Sequence[int] = (1, 256),
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
    min_seconds: float = 0.0,
    seed: int = 0,
) -> list[Latency]:
    """Latency of the ONNX model at ``path`` on onnxruntime's CPU provider, one :class:`Latency` per batch.

    The session runs ``threads`` intra-op threads, one inter-op thread, all graph optimizations. Its input
    ``input`` gets float32 ``[batch, *input_shape]`` standard-normal rows (a generator seeded by ``seed``);
    ``warmup`` untimed calls, then timed calls until there are ``runs`` of them and ``min_seconds`` of timing.
    Raises :class:`MissingExtraError` without onnxruntime, :class:`SpecError` when the model cannot be
    loaded or run on such input.
    """
    input_shape = _check_timing(input_shape, batches, threads, warmup, runs, min_seconds)
    path = _existing_file(path)
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingExtraError("Timing an ONNX model", "onnx") from error

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise SpecError(
            f"onnxruntime cannot load '{path}' ({type(error).__name__}: {error}). Expected an ONNX model "
            "file, as tunelab's export writes (model.onnx)."
        ) from error
    names = [node.name for node in session.get_inputs()]
    if names != ["input"]:
        raise SpecError(
            f"the ONNX model '{path}' has inputs {names}; expected one input named 'input', as tunelab's "
            "export writes. Export it with input_names=['input']."
        )

    rng = np.random.default_rng(seed)
    records = []
    for batch in batches:
        rows = rng.standard_normal((batch, *input_shape), dtype=np.float32)

        def call(rows: np.ndarray = rows) -> object:
            return session.run(None, {"input": rows})

        try:
            seconds = _time_calls(call, warmup=warmup, runs=runs, min_seconds=min_seconds)
        except Exception as error:
            raise SpecError(
                f"onnxruntime failed to run '{path}' on float32 input {[batch, *input_shape]} "
                f"({type(error).__name__}: {error}). Pass the model's input_shape (one sample, no batch "
                "axis)."
            ) from error
        records.append(_latency("onnxruntime", int(batch), threads, seconds))
    return records


def time_torch(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batches: Sequence[int] = (1, 256),
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
    min_seconds: float = 0.0,
    seed: int = 0,
) -> list[Latency]:
    """Latency of ``module`` in eval mode on the CPU with torch, one :class:`Latency` per batch.

    As :func:`time_onnx`, under ``torch.inference_mode()`` with ``torch.set_num_threads(threads)``; the thread
    count and the module's train / eval modes are restored afterwards. Inputs are float32 standard-normal
    rows from a ``torch.Generator`` seeded by ``seed``. Raises :class:`SpecError` when the module has tensors
    off the CPU or fails on such input.
    """
    input_shape = _check_timing(input_shape, batches, threads, warmup, runs, min_seconds)
    devices = {tensor.device.type for tensor in (*module.parameters(), *module.buffers())}
    if devices - {"cpu"}:
        raise SpecError(
            f"time_torch measures CPU latency, but the module has tensors on {sorted(devices)}. "
            "Move it with module.cpu() first."
        )
    generator = torch.Generator().manual_seed(seed)
    modes = {sub: sub.training for sub in module.modules()}
    previous_threads = torch.get_num_threads()
    records = []
    try:
        module.eval()
        torch.set_num_threads(threads)
        for batch in batches:
            rows = torch.randn((batch, *input_shape), generator=generator)

            def call(rows: torch.Tensor = rows) -> object:
                with torch.inference_mode():
                    return module(rows)

            try:
                seconds = _time_calls(call, warmup=warmup, runs=runs, min_seconds=min_seconds)
            except Exception as error:
                raise SpecError(
                    f"the module failed on input {[batch, *input_shape]} "
                    f"({type(error).__name__}: {error}). Pass its input_shape (one sample, no batch axis)."
                ) from error
            records.append(_latency("torch", int(batch), threads, seconds))
    finally:
        torch.set_num_threads(previous_threads)
        for sub, training in modes.items():
            sub.training = training
    return records


def _check_timing(
    input_shape: tuple[int, ...],
    batches: Sequence[int],
    threads: int,
    warmup: int,
    runs: int,
    min_seconds: float,
) -> tuple[int, ...]:
    """``input_shape`` as plain ints, once every argument is valid; else a :class:`SpecError` naming all."""
    problems = []
    if not all(isinstance(size, int | np.integer) and size >= 1 for size in input_shape):
        problems.append(f"input_shape must be positive ints (one sample, no batch axis), got {input_shape}")
    if not batches or not all(isinstance(batch, int | np.integer) and batch >= 1 for batch in batches):
        problems.append(f"batches must be one or more positive ints, got {batches}")
    if threads < 1:
        problems.append(f"threads must be >= 1, got {threads}")
    if warmup < 0:
        problems.append(f"warmup must be >= 0, got {warmup}")
    if runs < 1:
        problems.append(f"runs must be >= 1 (30 or more for a stable median and IQR), got {runs}")
    if not (math.isfinite(min_seconds) and min_seconds >= 0):
        problems.append(f"min_seconds must be a finite number >= 0, got {min_seconds}")
    if problems:
        raise SpecError("Cannot time the model: " + "; ".join(problems) + ".")
    return tuple(int(size) for size in input_shape)


def _time_calls(call: Callable[[], object], *, warmup: int, runs: int, min_seconds: float) -> np.ndarray:
    """Seconds of each timed call: ``warmup`` untimed calls, then at least ``runs`` and ``min_seconds``."""
    for _ in range(warmup):
        call()
    seconds: list[float] = []
    total = 0.0
    while len(seconds) < runs or total < min_seconds:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        total += elapsed
    return np.asarray(seconds)


def _latency(runtime: Runtime, batch: int, threads: int, seconds: np.ndarray) -> Latency:
    q25, median, q75 = (float(value) for value in np.percentile(seconds * 1e3, [25, 50, 75]))
    return Latency(
        runtime=runtime,
        batch=batch,
        threads=threads,
        runs=len(seconds),
        median_ms=median,
        iqr_ms=q75 - q25,
        samples_per_second=batch / (median / 1e3) if median > 0 else math.inf,
    )


# ----------------------------------------------------------------------------------------------------- CPU


def int8_capability(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """What this CPU offers int8 inference, from ``cpuinfo``'s flags (Linux; all False elsewhere).

    ``{"cpu": model name, "avx2", "avx512_vnni", "avx_vnni", "amx_int8": bools, "vnni": any VNNI flag,
    "logical_cpus": int}``. Without VNNI (or AMX) int8 matrix products on x86 go through AVX2's 16-bit
    intermediates, so quantized models gain much less speed there; record this beside every latency.
    """
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            name = value.strip()
        elif key in ("flags", "features") and not flags:  # the first processor's (x86 / ARM spelling)
            flags = set(value.split())
    return {
        "cpu": name,
        "avx2": "avx2" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
        "vnni": any("vnni" in flag for flag in flags),
        "logical_cpus": os.cpu_count() or 1,
    }
