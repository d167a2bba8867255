"""Training throughput of tunelab's `Trainer` against a hand-written tight PyTorch loop, side by side.

Both train the same MLP (784-256-128-10, Adam 1e-3, batch 128) on Fashion-MNIST (random data of the same
shape when the dataset is not installed), from the same initial weights, on tensors already in memory, with
batches sliced from a per-epoch permutation. Runs are interleaved (tight, trainer, trainer, tight, ...) and
each side's median is reported, so a slow moment of a shared machine hurts both sides alike. The timed span is
the whole ``fit`` call (input checks included) against the whole tight loop.

    python bench/train_loop.py            # 60,000 rows, 2 epochs, 5 repeats
    python bench/train_loop.py --quick    # 10,000 rows, 1 epoch, 3 repeats

Prints a table, the ratio (goal: trainer >= 0.95x the tight loop) and one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.train import Trainer, TrainSpec

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
BATCH_SIZE = 128
LR = 1e-3


def load_data(n_rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n_rows`` Fashion-MNIST training images as float32 [N, 784] in [0, 1], labels int64 [N]."""
    images, labels = (
        FASHION_MNIST / "train-images-idx3-ubyte.gz",
        FASHION_MNIST / "train-labels-idx1-ubyte.gz",
    )
    if images.exists() and labels.exists():
        with gzip.open(images) as f:
            X = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)[:n_rows]
        with gzip.open(labels) as f:
            y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:n_rows]
        return (
            torch.tensor(X, dtype=torch.float32) / 255.0,
            torch.tensor(y, dtype=torch.int64),
            "fashion-mnist",
        )
    generator = torch.Generator().manual_seed(seed)
    X = torch.rand(n_rows, 784, generator=generator)
    return X, torch.randint(0, 10, (n_rows,), generator=generator), "random"


def build_mlp(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )


def tight_loop(x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int) -> float:
    """The loop a practitioner writes by hand; returns its wall-clock seconds."""
    model = build_mlp(seed)
    started = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    n_rows = len(x)
    loss = torch.zeros(())
    for _ in range(epochs):
        order = torch.randperm(n_rows, generator=generator)
        for start in range(0, n_rows, BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    loss.item()  # wait for the last step
    return time.perf_counter() - started


def trainer_loop(x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int) -> float:
    model = build_mlp(seed)
    started = time.perf_counter()
    spec = TrainSpec(optimizer="adam", lr=LR, batch_size=BATCH_SIZE, epochs=epochs, seed=seed, device="cpu")
    Trainer(model, spec, task="classification", n_classes=10).fit((x, y))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 1 epoch, 3 repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    # As the tunelab command does, before any torch work: denormals flushed on every torch thread.
    torch.set_flush_denormal(True)
    n_rows = args.rows or (10_000 if args.quick else 60_000)
    epochs = args.epochs or (1 if args.quick else 2)
    repeats = args.repeats or (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    X, y, source = load_data(n_rows, seed=0)

    arms = {"tight loop": tight_loop, "Trainer": trainer_loop}
    for arm in arms.values():  # warm-up: allocator, thread pool, first-call costs
        arm(X[:2048], y[:2048], epochs=1, seed=0)
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(repeats):
        order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
        for name in order:
            seconds[name].append(arms[name](X, y, epochs=epochs, seed=repeat))

    samples = n_rows * epochs
    rate = {name: samples / statistics.median(times) for name, times in seconds.items()}
    ratio = rate["Trainer"] / rate["tight loop"]
    print(f"MLP 784-256-128-10, Adam, batch {BATCH_SIZE}, {n_rows} rows ({source}) x {epochs} epochs, "
          f"{repeats} interleaved repeats, {torch.get_num_threads()} threads")  # fmt: skip
    for name, times in seconds.items():
        runs = ", ".join(f"{t:.2f}s" for t in times)
        print(f"  {name:<11} median {rate[name]:>9,.0f} samples/s   runs: {runs}")
    print(f"  Trainer / tight loop = {ratio:.3f}  (goal >= 0.95)")
    record = {
        "bench": "train_loop",
        "model": "mlp-784-256-128-10",
        "data": source,
        "rows": n_rows,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "tight_samples_per_s": round(rate["tight loop"], 1),
        "trainer_samples_per_s": round(rate["Trainer"], 1),
        "ratio": round(ratio, 4),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
