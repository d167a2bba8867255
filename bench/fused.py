"""Fused populations vs sequential training: member-samples per second and population MFU, side by side.

For each case, K models are trained (Adam, batch 128, synthetic data of Fashion-MNIST's shapes) two ways in
the same process: fused as one population (tunelab.fused), and sequentially, one torch model after another
with torch.optim in a tight loop. Timings alternate between the two and keep the best of several repeats,
because the CPU may be shared. MFU = model FLOPs/s (3 x the forward matmul/conv FLOPs per sample, the usual
convention) / the fp32 matmul peak measured in the same run with a large torch.matmul. Whenever 784-256-10
runs, a single 784-256-10 MLP written out by hand (raw tensors, addmm, torch's fused Adam) is timed too, at
each batch size, as the reference the issue compares the population's MFU with.

    python bench/fused.py            # the full grid
    python bench/fused.py --quick    # a short run; one JSON line per case
    python bench/fused.py --quick --case mlp-784-256-10 --K 16   # one case, one population size
    python bench/fused.py --device cuda   # on a GPU: timings synchronize the device; K up to 256
    python bench/fused.py --device cuda --no-cuda-graphs   # populations launch every kernel from Python
    python bench/fused.py --case mlp-784-256-10 --K 16 --batch 128 --batch 256   # MFU at two batch sizes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.fused import PopAdam, Population, PopulationTrainer

DEFAULT_BATCH = 128


class SequenceModel(nn.Module):
    """Rows of a 28x28 image as 28 steps: LSTM(28 -> 64) -> last step -> Linear(64 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(28, 64, batch_first=True)
        self.pooling = "last"
        self.head = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def mlp(hidden: int) -> Callable[[], nn.Module]:
    return lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


# name -> (factory, input shape per sample, forward matmul/conv FLOPs per sample)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], float]] = {
    "mlp-784-64-10": (mlp(64), (1, 28, 28), 2.0 * (784 * 64 + 64 * 10)),
    "mlp-784-256-10": (mlp(256), (1, 28, 28), 2.0 * (784 * 256 + 256 * 10)),
    "cnn-16-32": (cnn, (1, 28, 28), 2.0 * (1 * 16 * 9 * 28 * 28 + 16 * 32 * 9 * 14 * 14 + 32 * 7 * 7 * 10)),
    "lstm-28x28-64": (SequenceModel, (28, 28), 2.0 * 28 * (28 + 64) * 4 * 64 + 2.0 * 64 * 10),
}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(seconds: float, device: torch.device) -> float:
    """fp32 FLOP/s of a large square matmul (best of a few runs; on CUDA without TF32, torch's default)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def minibatch(x: Tensor, y: Tensor, step: int, batch: int) -> tuple[Tensor, Tensor]:
    """The ``step``-th minibatch of ``batch`` rows, cycling through the synthetic data."""
    start = step * batch % (x.shape[0] - batch)
    return x[start : start + batch], y[start : start + batch]


def time_fused(
    models: list[nn.Module], x: Tensor, y: Tensor, n_steps: int, batch: int, *, cuda_graphs: bool = True
) -> float:
    """Seconds per step of one population of all models (after three warm-up steps: on a GPU the first runs
    eagerly and the second records the CUDA graph the others replay, unless ``cuda_graphs`` is False)."""
    population = Population.from_modules(models)
    trainer = PopulationTrainer(
        population,
        PopAdam(population.parameters(), n_members=len(models), lr=1e-3),
        cuda_graphs="auto" if cuda_graphs else False,
    )
    for step in range(3):
        trainer.train_step(*minibatch(x, y, step, batch))
    sync(x.device)
    start = time.perf_counter()
    for step in range(n_steps):
        trainer.train_step(*minibatch(x, y, step, batch))
    sync(x.device)
    return (time.perf_counter() - start) / n_steps


def time_sequential(models: list[nn.Module], x: Tensor, y: Tensor, n_steps: int, batch: int) -> float:
    """Seconds per step of all models trained one after another with torch.optim.Adam (tight loops)."""
    total = 0.0
    for model in models:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for step in range(n_steps + 1):
            if step == 1:  # the first step warms up
                sync(x.device)
                start = time.perf_counter()
            xb, yb = minibatch(x, y, step, batch)
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        sync(x.device)
        total += time.perf_counter() - start
    return total / n_steps


def time_single_tight_loop(hidden: int, x: Tensor, y: Tensor, n_steps: int, batch: int) -> float:
    """Seconds per step of one 784-hidden-10 MLP written out by hand: raw tensors, addmm, fused Adam."""
    device = x.device
    w1 = (torch.randn(784, hidden, device=device) / 28).requires_grad_()
    b1 = torch.zeros(hidden, device=device, requires_grad=True)
    w2 = (torch.randn(hidden, 10, device=device) / hidden**0.5).requires_grad_()
    b2 = torch.zeros(10, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=1e-3, fused=True)
    flat = x.flatten(1)
    for step in range(n_steps + 1):
        if step == 1:
            sync(device)
            start = time.perf_counter()
        xb, yb = minibatch(flat, y, step, batch)
        optimizer.zero_grad()
        F.cross_entropy(torch.addmm(b2, torch.relu(torch.addmm(b1, xb, w1)), w2), yb).backward()
        optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / n_steps


def paired(time_once: Callable[[], float], device: torch.device) -> tuple[float, float]:
    """``(seconds, peak)``: one timing and the matmul peak measured right before and after it (the higher).

    This CPU's clock moves with its neighbours' load by up to a third within a run, so an MFU divides a
    rate by the peak measured next to it, not by one taken minutes away.
    """
    before = matmul_peak(0.3, device)
    seconds = time_once()
    return seconds, max(before, matmul_peak(0.3, device))


def efficiency(timings: list[tuple[float, float]], step_flops: float) -> dict[str, Any]:
    """A record's MFU fields from ``(seconds, peak)`` timings of a step of ``step_flops`` model FLOPs."""
    mfus = [step_flops / seconds / peak for seconds, peak in timings]
    return {
        "mfu": round(statistics.median(mfus), 3),
        "mfu_repeats": [round(m, 3) for m in mfus],
        "peak_gflops": round(max(peak for _, peak in timings) / 1e9, 1),
        # the best timing's model FLOP/s, for the run-wide conservative reading
        "model_gflops": round(step_flops / min(seconds for seconds, _ in timings) / 1e9, 1),
    }


def run_case(
    name: str,
    n_members: int,
    *,
    n_steps: int,
    repeats: int,
    device: torch.device,
    batch: int = DEFAULT_BATCH,
    cuda_graphs: bool = True,
) -> dict[str, Any]:
    factory, shape, flops = CASES[name]
    x, y = batches(shape, device, batch)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        models = [factory().to(device) for _ in range(n_members)]
    sequential, timings = float("inf"), []
    for _ in range(repeats):  # alternate: other processes may share the CPU
        timings.append(
            paired(lambda: time_fused(models, x, y, n_steps, batch, cuda_graphs=cuda_graphs), device)
        )
        sequential = min(
            sequential,
            time_sequential(
                [factory().to(device) for _ in range(n_members)], x, y, max(2, n_steps // 2), batch
            ),
        )
    fused = min(seconds for seconds, _ in timings)
    fused_rate, sequential_rate = n_members * batch / fused, n_members * batch / sequential
    return {
        "model": name,
        "K": n_members,
        "batch": batch,
        "optimizer": "adam",
        "fused_member_samples_per_s": round(fused_rate),
        "sequential_member_samples_per_s": round(sequential_rate),
        "speedup": round(fused_rate / sequential_rate, 2),
        **efficiency(timings, n_members * batch * 3 * flops),
        "device": device.type,
        "cuda_graphs": cuda_graphs and device.type == "cuda",
    }


def batches(shape: tuple[int, ...], device: torch.device, batch: int) -> tuple[Tensor, Tensor]:
    """Eight batches of synthetic inputs of ``shape`` and class labels, on ``device``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch * 8, *shape, generator=generator)
    y = torch.randint(0, 10, (batch * 8,), generator=generator)
    return x.to(device), y.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short timings, fewer K (one JSON line per case)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--case",
        choices=sorted(CASES),
        action="append",
        help="run only this case (repeatable; default: every case, then the single tight loop)",
    )
    parser.add_argument("--K", type=int, action="append", help="run only these population sizes (repeatable)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="alternating repeats per case, best kept (default 2 / 3)"
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument(
        "--batch",
        type=int,
        action="append",
        help=f"minibatch size (repeatable: every case at each size; default {DEFAULT_BATCH})",
    )
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on a GPU, train populations without CUDA graphs (tunelab's default records the step as one)",
    )
    args = parser.parse_args()
    # As the tunelab command does, before any torch work: denormals flushed on every torch thread.
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n_steps, repeats = (6, 2) if args.quick else (20, 3)
    if args.repeats is not None:
        repeats = args.repeats
    mlp_Ks = [1, 4, 16, 64, 256] if device.type == "cuda" else [1, 4, 16, 64]
    grid = {
        "mlp-784-64-10": mlp_Ks,
        "mlp-784-256-10": mlp_Ks,
        "cnn-16-32": [4, 16] if args.quick else [1, 4, 16],
        "lstm-28x28-64": [4, 16] if args.quick else [1, 4, 16],
    }
    if args.case:
        grid = {name: Ks for name, Ks in grid.items() if name in args.case}
    if args.K:
        grid = dict.fromkeys(grid, args.K)
    matmul_peak(1.0 if args.quick else 3.0, device)  # warms the clock and the BLAS threads up
    records: list[dict[str, Any]] = []
    for batch in args.batch or [DEFAULT_BATCH]:
        for name, Ks in grid.items():
            for K in Ks:
                records.append(
                    run_case(
                        name,
                        K,
                        n_steps=n_steps,
                        repeats=repeats,
                        device=device,
                        batch=batch,
                        cuda_graphs=not args.no_cuda_graphs,
                    )
                )
                print(json.dumps(records[-1]), flush=True)
        if "mlp-784-256-10" in grid:
            records.append(tight_loop_case(batch, n_steps=n_steps, repeats=repeats, device=device))
            print(json.dumps(records[-1]), flush=True)
    # The conservative reading: every rate against the highest peak seen anywhere in the run.
    run_peak = max(r["peak_gflops"] for r in records)
    summary = {
        f"{r['model']} K={r['K']} batch={r['batch']}": round(r["model_gflops"] / run_peak, 3) for r in records
    }
    print(json.dumps({"run_peak_gflops": run_peak, "mfu_at_run_peak": summary}), flush=True)


def tight_loop_case(batch: int, *, n_steps: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """The reference: one 784-256-10 MLP in a hand-written tight loop, as a JSON record."""
    x, y = batches((1, 28, 28), device, batch)
    timings = [
        paired(lambda: time_single_tight_loop(256, x, y, 4 * n_steps, batch), device) for _ in range(repeats)
    ]
    return {
        "model": "mlp-784-256-10-single-tight-loop",
        "K": 1,
        "batch": batch,
        "optimizer": "adam (fused kernel)",
        "member_samples_per_s": round(batch / min(seconds for seconds, _ in timings)),
        "speedup": 1.0,
        **efficiency(timings, batch * 3 * CASES["mlp-784-256-10"][2]),
        "device": device.type,
    }


if __name__ == "__main__":
    main()
