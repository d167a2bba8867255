"""Keeping freed memory in the process, so that a training step's large tensors do not fault in fresh pages.

Why: glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at start, raised as such blocks are
freed) with ``mmap`` and gives them back with ``munmap``, and it trims the top of its heap whenever more than
twice that threshold is free there. A training step allocates and frees the same large activations every time
(the zero-config CNN's first feature map is 12.8 MB at batch 64), so each step maps fresh pages that the
kernel must zero on first touch: on this project's 2-core machine two million page faults a minute, and the
CNN trained at 1,700 samples/s instead of 2,500-3,000 (BENCHMARKS.md). Pinning the mmap threshold at glibc's
ceiling (32 MiB on 64-bit) and trimming only past 2 GiB keeps those blocks in the heap for the next step.

The cost: memory freed by the process stays with it (its resident size stays near its peak), as in PyTorch's
own CUDA caching allocator. Blocks above 32 MiB (a whole data set, say) are still mapped and unmapped.
Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: trim only when 2 GiB lie free at the heap's top

_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's allocator to keep freed blocks (once per process; later calls return the first answer).

    True where it took effect. Called by ``Trainer.fit`` and the population trainer; a program may call it
    first itself.
    """
    global _kept
    if _kept is None:
        _kept = _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and _mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    return _kept


def _mallopt(parameter: int, value: int) -> bool:
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or one without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(parameter, value))
