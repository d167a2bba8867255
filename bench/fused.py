"""Fused populations vs sequential training: member-samples per second and population MFU, side by side.

For each case, K models are trained (Adam, batch 128, synthetic data of Fashion-MNIST's shapes) two ways in
the same process: fused as one population (tunelab.fused), and sequentially, one torch model after another
with torch.optim in a tight loop. Timings alternate between the two and keep the best of several repeats,
because the CPU may be shared. MFU = model FLOPs/s (3 x the forward matmul/conv FLOPs per sample, the usual
convention) / the fp32 matmul peak measured in the same run with a large torch.matmul. Whenever 784-256-10
runs, a single 784-256-10 MLP written out by hand (raw tensors, addmm, torch's fused Adam) is timed too, at
each batch size, as the reference the issue compares the population's MFU with.

The text cases train K tunelab TextModels (bag of 64-d embeddings, mean_max pooling, dropout 0.3; the
bigrams case adds hashed bigrams, 65536 buckets; the weighted case is the zero-config text search's first
trial: 128-d embeddings pooled by learned token weights) with AdamW (weight decay 0.01) at batch 32, for K =
1, 2, 4, 8, on the fortunes quotations' training part (2099 texts of 176
token ids, 5344 ids, 8 topics) when /usr/share/games/fortunes is installed, else on random ids of that shape
drawn Zipf-like (each record's "data" says which). Their MFU counts only the head's matmul (a bag has none).

    python bench/fused.py            # the full grid
    python bench/fused.py --quick    # a short run; one JSON line per case
    python bench/fused.py --quick --case mlp-784-256-10 --K 16   # one case, one population size
    python bench/fused.py --quick --case text-bag --threads 2      # K TextModels, fused vs one after another
    python bench/fused.py --device cuda   # on a GPU: timings synchronize the device; K up to 256
    python bench/fused.py --device cuda --no-cuda-graphs   # populations launch every kernel from Python
    python bench/fused.py --case mlp-784-256-10 --K 16 --batch 128 --batch 256   # MFU at two batch sizes
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.fused import PopAdam, PopAdamW, Population, PopulationTrainer

DEFAULT_BATCH = 128
TEXT_BATCH = 32  # the zero-config text search's first trial
# name -> (population optimizer, torch optimizer, their shared hyperparameters)
OPTIMIZERS: dict[str, tuple[type, type[torch.optim.Optimizer], dict[str, float]]] = {
    "adam": (PopAdam, torch.optim.Adam, {"lr": 1e-3}),
    "adamw": (PopAdamW, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}),
}


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

# name -> the TextModel's spec (tunelab.models.build_model); trained with AdamW at TEXT_BATCH
TEXT_BAG = {"type": "text", "encoder": "bag", "embedding_dim": 64, "pooling": "mean_max", "dropout": 0.3}
TEXT_CASES: dict[str, dict[str, Any]] = {
    "text-bag": TEXT_BAG,
    "text-bag-bigrams": {**TEXT_BAG, "ngrams": 2, "buckets": 65536},
    "text-bag-weighted": {**TEXT_BAG, "embedding_dim": 128, "pooling": "weighted"},
}
TEXT_CLASSES = 8


@functools.cache
def text_data() -> tuple[Tensor, Tensor, Any, str]:
    """``(x, y, text, source)``: the fortunes quotations' training part (token ids as float32 rows, topics)
    and its ``TextInput``; without the fortunes package, random ids of the same shape, Zipf-like (id ``i``
    about as frequent as ``1 / i``), right-padded to random lengths, with random labels."""
    from tunelab.data import DataSpec, prepare_data
    from tunelab.inputs import TextInput

    if Path("/usr/share/games/fortunes").is_dir():
        bundle = prepare_data(DataSpec(source="fortunes"), seed=0)
        return bundle.X_train, bundle.y_train, bundle.text, "fortunes"
    n, length, vocab = 2099, 176, 5344
    generator = torch.Generator().manual_seed(0)
    # log-uniform ids in [1, vocab - 1]: P(i) ~ 1 / i, as word frequencies (ids 0 = padding, 1 = unknown)
    ids = torch.exp(torch.rand(n, length, generator=generator) * torch.log(torch.tensor(vocab - 1.0)))
    ids = ids.long().clamp(1, vocab - 1)
    lengths = torch.randint(10, length + 1, (n,), generator=generator)
    ids[torch.arange(length)[None] >= lengths[:, None]] = 0
    y = torch.randint(0, TEXT_CLASSES, (n,), generator=generator)
    return ids.float(), y, TextInput(length=length, vocab_size=vocab), "synthetic Zipf-like ids"


def text_case(name: str) -> tuple[Callable[[], nn.Module], Tensor, Tensor, float, str]:
    """``(factory, x, y, flops, source)`` of a text case: each call of ``factory`` builds a TextModel with a
    seed drawn from torch's global generator; ``flops`` is the head's forward matmul per sample."""
    from tunelab.models import build_model

    x, y, text, source = text_data()
    spec = TEXT_CASES[name]
    n_classes = int(y.max()) + 1

    def factory() -> nn.Module:
        seed = int(torch.randint(0, 2**31 - 1, ()))
        return build_model(spec, input_shape=(text.length,), output_dim=n_classes, seed=seed, text=text)

    pooled = spec["embedding_dim"] * (2 if spec["pooling"] == "mean_max" else 1)
    return factory, x, y, 2.0 * pooled * n_classes, source


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
    models: list[nn.Module],
    x: Tensor,
    y: Tensor,
    n_steps: int,
    batch: int,
    *,
    cuda_graphs: bool = True,
    optimizer: str = "adam",
) -> float:
    """Seconds per step of one population of all models (after three warm-up steps: on a GPU the first runs
    eagerly and the second records the CUDA graph the others replay, unless ``cuda_graphs`` is False)."""
    population = Population.from_modules(models)
    pop_optimizer, _, hparams = OPTIMIZERS[optimizer]
    trainer = PopulationTrainer(
        population,
        pop_optimizer(population.parameters(), n_members=len(models), **hparams),
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


def time_sequential(
    models: list[nn.Module], x: Tensor, y: Tensor, n_steps: int, batch: int, *, optimizer: str = "adam"
) -> float:
    """Seconds per step of all models trained one after another with torch.optim.Adam / AdamW (tight
    loops)."""
    _, torch_optimizer, hparams = OPTIMIZERS[optimizer]
    total = 0.0
    for model in models:
        optim = torch_optimizer(model.parameters(), **hparams)
        for step in range(n_steps + 1):
            if step == 1:  # the first step warms up
                sync(x.device)
                start = time.perf_counter()
            xb, yb = minibatch(x, y, step, batch)
            optim.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optim.step()
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
    extra: dict[str, Any] = {}
    if name in TEXT_CASES:
        factory, x, y, flops, extra["data"] = text_case(name)
        x, y, optimizer = x.to(device), y.to(device), "adamw"
    else:
        factory, shape, flops = CASES[name]
        x, y = batches(shape, device, batch)
        optimizer = "adam"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        models = [factory().to(device) for _ in range(n_members)]
    sequential, timings = float("inf"), []
    for _ in range(repeats):  # alternate: other processes may share the CPU
        timings.append(
            paired(
                lambda: time_fused(
                    models, x, y, n_steps, batch, cuda_graphs=cuda_graphs, optimizer=optimizer
                ),
                device,
            )
        )
        sequential = min(
            sequential,
            time_sequential(
                [factory().to(device) for _ in range(n_members)],
                x,
                y,
                max(2, n_steps // 2),
                batch,
                optimizer=optimizer,
            ),
        )
    fused = min(seconds for seconds, _ in timings)
    fused_rate, sequential_rate = n_members * batch / fused, n_members * batch / sequential
    return {
        "model": name,
        "K": n_members,
        "batch": batch,
        "optimizer": optimizer,
        **extra,
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
        choices=sorted([*CASES, *TEXT_CASES]),
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
        help=f"minibatch size (repeatable: every case at each size; default {DEFAULT_BATCH}, text cases "
        f"{TEXT_BATCH})",
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
        "text-bag": [1, 2, 4, 8],
        "text-bag-bigrams": [1, 2, 4, 8],
        "text-bag-weighted": [1, 2, 4, 8],
    }
    if args.case:
        grid = {name: Ks for name, Ks in grid.items() if name in args.case}
    if args.K:
        grid = dict.fromkeys(grid, args.K)
    matmul_peak(1.0 if args.quick else 3.0, device)  # warms the clock and the BLAS threads up
    records: list[dict[str, Any]] = []
    for batch in args.batch or [None]:
        for name, Ks in grid.items():
            case_batch, case_steps, case_repeats = batch or DEFAULT_BATCH, n_steps, repeats
            if name in TEXT_CASES:  # steps of milliseconds: twice as many, and one more repeat unless told
                case_batch, case_steps = batch or TEXT_BATCH, 2 * n_steps
                case_repeats = repeats if args.repeats is not None else repeats + 1
            for K in Ks:
                records.append(
                    run_case(
                        name,
                        K,
                        n_steps=case_steps,
                        repeats=case_repeats,
                        device=device,
                        batch=case_batch,
                        cuda_graphs=not args.no_cuda_graphs,
                    )
                )
                print(json.dumps(records[-1]), flush=True)
        if "mlp-784-256-10" in grid:
            records.append(
                tight_loop_case(batch or DEFAULT_BATCH, n_steps=n_steps, repeats=repeats, device=device)
            )
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
