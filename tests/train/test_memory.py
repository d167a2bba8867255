"""keep_freed_memory: glibc's allocator told once per process to keep a step's freed blocks."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from tunelab.train import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _faults_to_fill(n_floats: int) -> int:
    """Minor page faults of allocating, writing and freeing a tensor of ``n_floats``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensor = torch.empty(n_floats)
    tensor.fill_(1.0)
    del tensor
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_a_freed_step_sized_tensor_is_reused_without_faulting_in_fresh_pages():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process; the same answer after
    n_floats = 3_200_000  # 12.8 MB: the zero-config CNN's first feature map at batch 64
    _faults_to_fill(n_floats)  # the first time, the heap grows: its pages are new
    pages = n_floats * 4 // resource.getpagesize()
    # Kept in the heap, the block's pages are already mapped: a small fraction faults, not all ~3,100.
    assert _faults_to_fill(n_floats) < pages // 10
