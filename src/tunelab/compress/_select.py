"""After the search: the Pareto front, measured again side by side with the original, and the pick.

The pick is the fastest (``prefer="latency"``, at the throughput batch) or smallest (``prefer="size"``)
front model whose validation score is within ``max_drop`` of the reference and which is not slower than the
original at any measured batch size: a compressed model slower than its fp32 original is never chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from tunelab.compress._measure import Latency
from tunelab.compress._search import Entry

__all__ = ["LATENCY_TIE", "SIZE_TIE", "Pick", "choose", "pareto_front", "remeasure"]

# Relative differences below these are measurement noise, not a reason to choose (runs of one model moved by
# 2-5% between rounds on this project's shared CPU).
LATENCY_TIE = 0.05
SIZE_TIE = 0.02


def _dominates(a: Entry, b: Entry, batch: int, maximize: bool) -> bool:
    score_ok = a.score >= b.score if maximize else a.score <= b.score
    score_better = a.score > b.score if maximize else a.score < b.score
    no_worse = score_ok and a.latency(batch) <= b.latency(batch) and a.size <= b.size
    better = score_better or a.latency(batch) < b.latency(batch) or a.size < b.size
    return no_worse and better


def pareto_front(entries: Sequence[Entry], *, batch: int, maximize: bool) -> list[Entry]:
    """The entries no other entry dominates on (score, latency at ``batch``, deflated size), fastest first."""
    front = [e for e in entries if not any(_dominates(o, e, batch, maximize) for o in entries if o is not e)]
    return sorted(front, key=lambda e: (e.latency(batch), e.size))


def remeasure(
    entries: Sequence[Entry],
    timer: Callable[[Entry], list[Latency]],
    *,
    rounds: int = 3,
) -> list[Entry]:
    """Latencies measured again, ``rounds`` times interleaved (A B C A B C ...) so that the machine's drift
    falls on all alike: per batch, the median over the rounds' medians, the IQR the widest.

    Entries of one structure (``Knobs.structure``: width and quantization; sparsity and fine-tuning change
    no computation) are one measurement, pooled over all of them and given to each: on this project's CPU
    three front models of one structure measured 8.3, 8.8 and 11.1 ms apart, and a difference that is noise
    must not decide the pick (BENCHMARKS.md)."""
    groups: dict[tuple[float, str, str], list[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(entry.knobs.structure, []).append(i)
    pooled: dict[tuple[float, str, str], list[list[Latency]]] = {key: [] for key in groups}
    for _ in range(rounds):
        for key, members in groups.items():
            for i in members:
                pooled[key].append(timer(entries[i]))
    out = []
    for entry in entries:
        latencies = []
        for per_batch in zip(*pooled[entry.knobs.structure], strict=True):
            median = float(np.median([lat.median_ms for lat in per_batch]))
            first = per_batch[0]
            latencies.append(
                replace(
                    first,
                    median_ms=median,
                    iqr_ms=max(lat.iqr_ms for lat in per_batch),
                    runs=sum(lat.runs for lat in per_batch),
                    samples_per_second=first.batch / (median / 1e3),
                )
            )
        out.append(replace(entry, footprint=replace(entry.footprint, latencies=tuple(latencies))))
    return out


@dataclass(frozen=True)
class Pick:
    """The chosen entry (None: no compressed model qualifies, the winner stays) and why."""

    entry: Entry | None
    reason: str
    slower_than_original: tuple[int, ...]  # trials on the front that are slower than the original somewhere


def choose(
    front: Sequence[Entry],
    original: Entry,
    *,
    acceptable: Callable[[float], bool],
    prefer: str,
    batches: Sequence[int],
    metric: str,
    maximize: bool = True,
) -> Pick:
    """The pick among ``front`` (latencies as re-measured beside ``original``'s).

    Latencies within ``LATENCY_TIE`` of the fastest (sizes within ``SIZE_TIE`` of the smallest) are a tie,
    broken by the validation score: a latency difference that repeated measurements of one model show too
    is no reason to give up accuracy. On the Fashion-MNIST CNN the fastest pick without ties was 0.9% faster
    than a candidate 0.44 points more accurate (BENCHMARKS.md). A pick that is neither faster nor smaller than
    the original beyond those ties gains nothing: the winner stays (on a text bag, dynamic int8 of the head
    measured 1.00x and 1.00x and scored 2.4 test points lower)."""
    throughput = max(batches)
    slower = tuple(
        e.trial
        for e in front
        if e.trial is not None and any(e.latency(b) > original.latency(b) for b in batches)
    )
    eligible = [e for e in front if acceptable(e.score) and e.trial not in slower]
    if not eligible:
        within = [e for e in front if acceptable(e.score)]
        why = (
            f"no front model is within --max-drop of the winner's validation {metric}"
            if not within
            else "every front model within --max-drop is slower than the fp32 original at some batch size "
            f"({', '.join(map(str, batches))}): int8 / slimming does not pay on this machine"
        )
        return Pick(None, why + "; the winner stays as it is", slower)
    sign = 1.0 if maximize else -1.0
    if prefer == "size":
        smallest = min(e.size for e in eligible)
        tied = [e for e in eligible if e.size <= smallest * (1.0 + SIZE_TIE)]
        best = max(tied, key=lambda e: (sign * e.score, -e.latency(throughput)))
        how = f"the most accurate of the smallest (within {SIZE_TIE:.0%} of the smallest size)"
    else:
        fastest = min(e.latency(throughput) for e in eligible)
        tied = [e for e in eligible if e.latency(throughput) <= fastest * (1.0 + LATENCY_TIE)]
        best = max(tied, key=lambda e: (sign * e.score, -e.size))
        how = f"the most accurate of the fastest at batch {throughput} (within {LATENCY_TIE:.0%})"
    speedup = original.latency(throughput) / best.latency(throughput)
    smaller = original.size / best.size
    if speedup <= 1.0 + LATENCY_TIE and smaller <= 1.0 + SIZE_TIE:
        return Pick(
            None,
            f"{how}, the best front model within --max-drop is neither faster (by more than "
            f"{LATENCY_TIE:.0%}: {speedup:.2f}x at batch {throughput}) nor smaller (by more than "
            f"{SIZE_TIE:.0%}: {smaller:.2f}x) than the original; the winner stays as it is",
            slower,
        )
    reason = (
        f"{how} of {len(eligible)} front model(s) within --max-drop of the winner and no slower than the "
        f"original at any batch: {speedup:.2f}x the original's speed at batch {throughput}, "
        f"{smaller:.2f}x smaller (deflated), validation {metric} {best.score:.4f} vs {original.score:.4f}"
    )
    return Pick(best, reason, slower)
