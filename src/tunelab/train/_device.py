"""Choosing the training device, and scoping the global RNG that modules such as dropout draw from."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tunelab.errors import PerformanceWarning, SpecError

__all__ = [
    "denormals_flushed",
    "flush_denormals",
    "initial_rng_state",
    "resolve_device",
    "scoped_global_rng",
]


def flush_denormals() -> bool:
    """Make this process's CPU arithmetic flush denormal floats to zero; True where the CPU supports it.

    Why: training produces denormals (optimizer state decaying towards zero, for one), and x86 CPUs compute
    on them tens of times slower (a population's epochs grew sevenfold, all in the matmuls; BENCHMARKS.md).
    Flushing changes values below ~1.2e-38 to zero, far under fp32 training noise. Training flushes within a
    scope by itself (:func:`denormals_flushed`), but the mode is per thread and torch's worker threads keep
    the one they were created with, so a program that does parallel torch work before its first training
    calls this first, as the ``tunelab`` command and its worker processes do.
    """
    return bool(torch.set_flush_denormal(True))


_SMALLEST_NORMAL = sys.float_info.min  # module globals, so that Python cannot fold the product below
_HALF = 0.5
_threads_checked = False


def _thread_flushes() -> bool:
    """Whether the calling thread flushes denormals now: half the smallest normal double is denormal."""
    return _SMALLEST_NORMAL * _HALF == 0.0


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Within the block the calling thread flushes denormal floats to zero, and so do the torch threads it
    starts; its own mode is restored after (unless it flushed already: :func:`flush_denormals`).

    Training entry points run in it (``Trainer.fit``, ``PopulationTrainer.fit_epoch``, ``tune_experiment``),
    as TensorFlow flushes on its own threads. The first time in a process it also checks that every torch
    CPU thread flushes; where some do not (torch ran parallel work before, so its worker threads kept the
    old mode) it warns with a :class:`~tunelab.errors.PerformanceWarning` saying how to avoid it.
    """
    if _thread_flushes() or not torch.set_flush_denormal(True):
        yield  # flushing already (the tunelab command), or a CPU without the mode
        return
    try:
        _check_threads()
        yield
    finally:
        torch.set_flush_denormal(False)


def _check_threads() -> None:
    global _threads_checked
    if _threads_checked or torch.get_num_threads() == 1:
        return  # one thread: the caller's, which flushes now
    _threads_checked = True
    # 1e-20 squared is denormal: zero where the thread that computed it flushes. 2^20 elements are split
    # among all of torch's threads (its grain is 2^15).
    tiny = torch.full((1 << 20,), 1e-20)
    kept = int(torch.count_nonzero(tiny * tiny))
    if kept:
        warnings.warn(
            f"{kept} of {tiny.numel()} denormal products were not flushed to zero: torch ran parallel work "
            "before tunelab could set the flush mode, and its worker threads kept the old one. Arithmetic on "
            "denormals can make training several times slower. Call tunelab.train.flush_denormals() at the "
            "start of the program, before any torch work (the tunelab command does).",
            PerformanceWarning,
            stacklevel=4,
        )


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str, *, amp: bool = False) -> torch.device:
    """``auto`` picks cuda, else mps, else cpu; an unavailable device or amp off CUDA is a `SpecError`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            "device 'cuda' was asked for, but torch.cuda.is_available() is False (no GPU, or a CPU-only "
            "torch build). Use device: auto or cpu."
        )
    elif name == "mps" and not _mps_available():
        raise SpecError(
            "device 'mps' was asked for, but Apple's MPS backend is not available. Use auto or cpu."
        )
    if amp and name != "cuda":
        raise SpecError(
            f"amp (mixed precision) runs on CUDA only, but training runs on '{name}'. "
            "Set amp: false, or train on a CUDA GPU (device: cuda)."
        )
    return torch.device(name)


def initial_rng_state(seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG states (``cpu``, and ``cuda`` on a CUDA device) that ``seed`` gives, made without
    touching the global generators."""
    states = {"cpu": torch.Generator().manual_seed(seed).get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.Generator(device=device).manual_seed(seed).get_state()
    return states


@contextmanager
def scoped_global_rng(states: dict[str, torch.Tensor], device: torch.device) -> Iterator[None]:
    """Run the block with torch's global RNG set to ``states`` and restored afterwards; the block's final
    states are written back into ``states``.

    ``nn.Dropout`` and friends take no generator argument: they draw from the global RNG. Scoping it makes a
    run reproducible from its seed (and resumable from a checkpoint) without disturbing the caller's RNG.
    """
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        torch.set_rng_state(states["cpu"])
        if cuda_devices:
            torch.cuda.set_rng_state(states["cuda"], device)
        try:
            yield
        finally:
            states["cpu"] = torch.get_rng_state()
            if cuda_devices:
                states["cuda"] = torch.cuda.get_rng_state(device)
