"""Training throughput of tunelab's `Trainer` against a hand-written eager PyTorch loop, with MFU.

Three models, each on Fashion-MNIST (random data of the same shape when the dataset is not installed), from
the same initial weights, on tensors already in memory, with batches sliced from a per-epoch permutation:

- ``mlp``:  784-256-128-10, Adam 1e-3, batch 128;
- ``cnn``:  the zero-config CNN of issue #14's 15-minute run: two conv blocks of 64 and 16 channels (ReLU,
  dropout 0.25, 2x2 max-pooling), a dense layer of 128, AdamW 1e-3, batch 64;
- ``lstm``: the zero-config recurrent model: an LSTM of 64 units reading each image as 28 rows of 28 pixels,
  its last output into a linear head, AdamW 1e-3, batch 64.

Arms: ``eager loop`` (the loop a practitioner writes: ``nn.Sequential`` / ``nn.LSTM`` with ``nn.Dropout``, the
layers in their textbook order, contiguous tensors), ``Trainer`` (this checkout), and with ``--before REF``
``Trainer@REF`` (the same spec trained by the tunelab of git revision REF, exported to a temporary folder).
Every run is a fresh process (no arm inherits another's allocator or thread-pool state), the arms interleaved
(A B C, B C A, ...), each side's median reported, so a slow moment of a shared machine hurts all alike. The
timed span is the whole ``fit`` call (input checks included) against the whole eager loop, after a warm-up
fit on 2,048 rows in the same process.

MFU: the model's training FLOPs per sample (3 x the forward's multiply-adds x 2, counted from the layers'
shapes) x samples/s, divided by this machine's fp32 matmul rate measured in the same run (2048 x 2048 x 2048,
all threads, best of 5).

    python bench/train_loop.py --before 2f79890     # all three models, 5 repeats
    python bench/train_loop.py --model cnn --quick  # 10,000 rows, 1 epoch, 3 repeats

Prints a table per model, the ratios and one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
LR = 1e-3
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "spec": {"type": "mlp", "hidden": [256, 128]},
        "batch": 128,
        "optimizer": "adam",
        "shape": (784,),
    },
    "cnn": {
        "spec": {"type": "cnn", "channels": [64, 16], "dropout": 0.25, "dense": [128]},
        "batch": 64,
        "optimizer": "adamw",
        "shape": (1, 28, 28),
    },
    "lstm": {
        "spec": {"type": "rnn", "cell": "lstm", "hidden_size": 64},
        "batch": 64,
        "optimizer": "adamw",
        "shape": (28, 28),
    },
}
QUICK = {"rows": 10_000, "epochs": 1, "repeats": 3}
FULL = {"mlp": (60_000, 2), "cnn": (20_000, 1), "lstm": (20_000, 1)}  # rows, epochs


def load_data(n_rows: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n_rows`` Fashion-MNIST training images as float32 ``[N, *shape]`` in [0, 1], labels int64 [N]."""
    images, labels = (
        FASHION_MNIST / "train-images-idx3-ubyte.gz",
        FASHION_MNIST / "train-labels-idx1-ubyte.gz",
    )
    if images.exists() and labels.exists():
        with gzip.open(images) as f:
            X = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)[:n_rows]
        with gzip.open(labels) as f:
            y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:n_rows]
        x = torch.tensor(X, dtype=torch.float32).div_(255.0).reshape(-1, *shape)
        return x, torch.tensor(y, dtype=torch.int64), "fashion-mnist"
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n_rows, *shape, generator=generator)
    return x, torch.randint(0, 10, (n_rows,), generator=generator), "random"


# ------------------------------------------------------------------------------------------ the eager loop


class _LastStep(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(28, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def textbook_model(name: str) -> nn.Module:
    """The model as a practitioner writes it; its state-dict keys are those of tunelab's build."""
    spec = MODELS[name]["spec"]
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )
    if name == "cnn":
        layers: list[nn.Module] = []
        channels = 1
        for width in spec["channels"]:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Dropout(spec["dropout"])]
            layers.append(nn.MaxPool2d(2))
            channels = width
        layers += [nn.Flatten(), nn.Linear(channels * 7 * 7, 128), nn.ReLU(), nn.Dropout(spec["dropout"])]
        return nn.Sequential(*layers, nn.Linear(128, 10))
    return _LastStep(spec["hidden_size"])


def eager_loop(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int
) -> float:
    batch = MODELS[name]["batch"]
    started = time.perf_counter()
    make = torch.optim.Adam if MODELS[name]["optimizer"] == "adam" else torch.optim.AdamW
    optimizer = make(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            rows = order[start : start + batch]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    loss.item()  # wait for the last step
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------ one run


def tunelab_model(name: str, seed: int) -> nn.Module:
    from tunelab.models import build_model

    return build_model(MODELS[name]["spec"], input_shape=MODELS[name]["shape"], output_dim=10, seed=seed)


def trainer_fit(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int
) -> float:
    from tunelab.train import Trainer, TrainSpec

    started = time.perf_counter()
    spec = TrainSpec(
        optimizer=MODELS[name]["optimizer"],
        lr=LR,
        weight_decay=0.0 if MODELS[name]["optimizer"] == "adam" else 0.01,
        batch_size=MODELS[name]["batch"],
        epochs=epochs,
        seed=seed,
        device="cpu",
    )
    Trainer(model, spec, task="classification", n_classes=10).fit((x, y))
    return time.perf_counter() - started


def one_run(arm: str, name: str, rows: int, epochs: int, seed: int) -> dict[str, Any]:
    """Train once in this process (after a warm-up) and return the seconds."""
    torch.set_flush_denormal(True)  # as the tunelab command does, before any torch work
    x, y, source = load_data(rows, MODELS[name]["shape"])
    reference = tunelab_model(name, seed)  # the same initial weights for every arm
    if arm == "eager loop":
        model = textbook_model(name)
        model.load_state_dict(reference.state_dict())
        eager_loop(name, textbook_model(name), x[:2048], y[:2048], 1, seed)
        seconds = eager_loop(name, model, x, y, epochs, seed)
    else:
        trainer_fit(name, tunelab_model(name, seed), x[:2048], y[:2048], 1, seed)
        seconds = trainer_fit(name, reference, x, y, epochs, seed)
    return {"seconds": seconds, "source": source, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------ measurement


def forward_flops(name: str) -> float:
    """Multiply-adds x 2 of one sample's forward pass, from the layers' shapes."""
    model = tunelab_model(name, 0).eval()
    flops = 0.0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            out = output
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            flops += 2.0 * k * out.shape[1] * out.shape[2] * out.shape[3]
        elif isinstance(module, nn.Linear):
            flops += 2.0 * module.in_features * module.out_features
        elif isinstance(module, nn.LSTM):
            steps = inputs[0].shape[1]
            gates = 4 * module.hidden_size
            flops += 2.0 * steps * gates * (module.input_size + module.hidden_size) * module.num_layers

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *MODELS[name]["shape"]))
    for hook in hooks:
        hook.remove()
    return flops


def matmul_peak() -> float:
    """fp32 FLOP/s of a 2048^3 matmul on all threads, best of 5."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 2048**3 / best


def exported_before(ref: str, into: Path) -> Path:
    """``src/`` of git revision ``ref`` under ``into``; returns the folder to put on PYTHONPATH."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def spawn(arm: str, name: str, rows: int, epochs: int, seed: int, src: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--run", arm, "--model", name, "--rows", str(rows)]
    command += ["--epochs", str(epochs), "--seed", str(seed)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--before", metavar="REF", help="also time the Trainer of this git revision")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 1 epoch, 3 repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one run in this process (internal)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(args.run, args.model, args.rows, args.epochs, args.seed)))
        return

    here = Path(__file__).resolve().parent.parent / "src"
    names = list(MODELS) if args.model == "all" else [args.model]
    torch.set_flush_denormal(True)
    peak = matmul_peak()
    print(f"fp32 matmul peak (2048^3, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"eager loop": here, "Trainer": here}
        if args.before:
            sources[f"Trainer@{args.before}"] = exported_before(args.before, Path(tmp))
        arms = list(sources)
        for name in names:
            rows = args.rows or (QUICK["rows"] if args.quick else FULL[name][0])
            epochs = args.epochs or (QUICK["epochs"] if args.quick else FULL[name][1])
            repeats = args.repeats or (QUICK["repeats"] if args.quick else 5)
            seconds: dict[str, list[float]] = {arm: [] for arm in arms}
            source = "?"
            for repeat in range(repeats):
                order = arms[repeat % len(arms) :] + arms[: repeat % len(arms)]
                for arm in order:
                    result = spawn(arm, name, rows, epochs, args.seed + repeat, sources[arm])
                    seconds[arm].append(result["seconds"])
                    source = result["source"]
            records.append(report(name, seconds, rows * epochs, peak, source, repeats))
    print(json.dumps({"bench": "train_loop", "peak_gflops": round(peak / 1e9, 1), "models": records,
                      "torch": torch.__version__, "machine": platform.machine(),
                      "load_average": [round(v, 2) for v in os.getloadavg()]}))  # fmt: skip


def report(
    name: str, seconds: dict[str, list[float]], samples: int, peak: float, source: str, repeats: int
) -> dict[str, Any]:
    spec = MODELS[name]
    train_flops = 3 * forward_flops(name)
    rate = {arm: samples / statistics.median(times) for arm, times in seconds.items()}
    print(f"\n{name}: {json.dumps(spec['spec'])}, batch {spec['batch']}, {samples:,} samples ({source}), "
          f"{repeats} interleaved repeats; {train_flops / 1e6:.2f} MFLOP per training sample")  # fmt: skip
    for arm, times in seconds.items():
        mfu = rate[arm] * train_flops / peak
        runs = ", ".join(f"{t:.2f}s" for t in times)
        print(f"  {arm:<22} median {rate[arm]:>8,.0f} samples/s  MFU {mfu:6.1%}   runs: {runs}")
    ratios = {arm: rate["Trainer"] / rate[arm] for arm in rate if arm != "Trainer"}
    for arm, ratio in ratios.items():
        print(f"  Trainer / {arm} = {ratio:.2f}x")
    return {
        "model": name,
        "data": source,
        "samples": samples,
        "train_mflop_per_sample": round(train_flops / 1e6, 3),
        "samples_per_s": {arm: round(r, 1) for arm, r in rate.items()},
        "mfu": {arm: round(r * train_flops / peak, 4) for arm, r in rate.items()},
        "trainer_over": {arm: round(r, 3) for arm, r in ratios.items()},
    }


if __name__ == "__main__":
    main()
