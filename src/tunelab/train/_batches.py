"""An epoch's minibatches: slices of one random permutation of the training rows."""

from __future__ import annotations

from tunelab.errors import SpecError

__all__ = ["batch_bounds"]


def batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each minibatch of an epoch over ``n_rows`` rows, in the order of the epoch's
    permutation. A lone last row is joined to the batch before it: BatchNorm has no statistics of one row.

    The single-model trainer and a fused population both draw their batches here, so a member trained in a
    population sees the batches the same configuration sees alone.
    """
    if n_rows < 1 or batch_size < 1:
        raise SpecError(
            f"need at least one row and a batch size of at least 1; got {n_rows} and {batch_size}"
        )
    size = min(batch_size, n_rows)
    bounds = [(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n_rows)]
    return bounds
