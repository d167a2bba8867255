"""Training throughput of tunelab's `Trainer` against a hand-written eager PyTorch loop, with MFU.

Five models, from the same initial weights (the tunelab model's state loaded into the hand-written one, whose
parameters have the same names and shapes), on tensors already in memory, with batches sliced from a
per-epoch permutation. Three read Fashion-MNIST (random data of the same shape when the dataset is not
installed):

- ``mlp``:  784-256-128-10, Adam 1e-3, batch 128;
- ``cnn``:  the zero-config CNN of issue #14's 15-minute run: two conv blocks of 64 and 16 channels (ReLU,
  dropout 0.25, 2x2 max-pooling), a dense layer of 128, AdamW 1e-3, batch 64;
- ``lstm``: the zero-config recurrent model: an LSTM of 64 units reading each image as 28 rows of 28 pixels,
  its last output into a linear head, AdamW 1e-3, batch 64.

Two read the fortunes quotations (8 topics; 2,099 training texts of 176 token ids, 0 = padding, tokenized once
by this checkout's ``tunelab.data`` in the parent process, the rows repeated to reach ``--rows``; random ids
of the same shape and vocabulary when /usr/share/games/fortunes is absent):

- ``textcnn``:  Kim's TextCNN: embeddings of 64, ``Conv1d(64, 64, k)`` for k in 3, 4, 5 with ReLU and max over
  time, concatenated, dropout 0.3, a linear head, AdamW 1e-3, batch 64;
- ``textlstm``: embeddings of 64, an LSTM of 64 units over all 176 positions, its outputs averaged over the
  real tokens, a linear head, AdamW 1e-3, batch 64.

Arms: ``eager loop`` (the loop a practitioner writes: ``nn.Sequential`` / ``nn.LSTM`` with ``nn.Dropout``, the
layers in their textbook order, contiguous tensors; the TextCNN's convolutions unpadded and its max over every
position, padding included), ``Trainer`` (this checkout), and with ``--before REF`` ``Trainer@REF`` (the same
spec trained by the tunelab of git revision REF, exported to a temporary folder; for the text models REF must
have them).
Every run is a fresh process (no arm inherits another's allocator or thread-pool state), the arms interleaved
(A B C, B C A, ...), each side's median reported, so a slow moment of a shared machine hurts all alike. The
timed span is the whole ``fit`` call (input checks included) against the whole eager loop, after a warm-up
fit on 2,048 rows (512 for the text models) in the same process.

MFU: the model's training FLOPs per sample (3 x the forward's multiply-adds x 2, counted from the shapes of
tunelab's layers: linear, conv, LSTM; embedding lookups count 0) x samples/s, divided by this machine's fp32
matmul rate measured in the same run (2048 x 2048 x 2048, all threads, best of 5).

    python bench/train_loop.py --before 2f79890         # all five models, 5 repeats
    python bench/train_loop.py --model cnn --quick      # 10,000 rows, 1 epoch, 3 repeats
    python bench/train_loop.py --model textlstm --quick # 4,096 rows (its default), 1 epoch, 3 repeats

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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from tunelab.inputs import TextInput

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FORTUNES = Path("/usr/share/games/fortunes")
LR = 1e-3
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "spec": {"type": "mlp", "hidden": [256, 128]},
        "batch": 128,
        "optimizer": "adam",
        "shape": (784,),
        "classes": 10,
    },
    "cnn": {
        "spec": {"type": "cnn", "channels": [64, 16], "dropout": 0.25, "dense": [128]},
        "batch": 64,
        "optimizer": "adamw",
        "shape": (1, 28, 28),
        "classes": 10,
    },
    "lstm": {
        "spec": {"type": "rnn", "cell": "lstm", "hidden_size": 64},
        "batch": 64,
        "optimizer": "adamw",
        "shape": (28, 28),
        "classes": 10,
    },
    # text models: "shape" None, a sample is the data's (length,) token ids
    "textcnn": {
        "spec": {
            "type": "text",
            "encoder": "cnn",
            "embedding_dim": 64,
            "channels": 64,
            "kernel_sizes": [3, 4, 5],
            "dropout": 0.3,
        },
        "batch": 64,
        "optimizer": "adamw",
        "shape": None,
        "classes": 8,
    },
    "textlstm": {
        "spec": {
            "type": "text",
            "encoder": "lstm",
            "embedding_dim": 64,
            "hidden_size": 64,
            "pooling": "mean",
        },
        "batch": 64,
        "optimizer": "adamw",
        "shape": None,
        "classes": 8,
    },
}
QUICK = {"rows": 10_000, "epochs": 1, "repeats": 3}  # rows: at most the model's FULL rows
FULL = {  # rows, epochs
    "mlp": (60_000, 2),
    "cnn": (20_000, 1),
    "lstm": (20_000, 1),
    "textcnn": (4_096, 1),  # a few seconds a fit; about 2 minutes a model on 2 cores
    "textlstm": (4_096, 1),
}


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


def text_data(into: Path) -> tuple[Path, TextInput]:
    """The fortunes training texts as this checkout's ``tunelab.data`` tokenizes them (random ids of the same
    shape and vocabulary when the quotations are not installed), saved under ``into`` for the runs to load."""
    from tunelab.inputs import TextInput

    if FORTUNES.is_dir():
        from tunelab.data import DataSpec, prepare_data

        bundle = prepare_data(DataSpec(source="fortunes"), seed=0)
        assert bundle.text is not None
        assert bundle.text.features == 0, "the hand-written models read token ids only"
        x, y, source = bundle.X_train, bundle.y_train, "fortunes"
        length, vocab_size = bundle.text.length, bundle.text.vocab_size
    else:
        (n, length), vocab_size = (2099, 176), 5344
        generator = torch.Generator().manual_seed(0)
        x = torch.randint(2, vocab_size, (n, length), generator=generator)
        x[torch.arange(length) >= torch.randint(1, length + 1, (n, 1), generator=generator)] = 0  # padding
        x, y, source = x.float(), torch.randint(0, 8, (n,), generator=generator), "random ids"
    path = into / "text.pt"
    torch.save({"x": x, "y": y, "source": source, "length": length, "vocab_size": vocab_size}, path)
    return path, TextInput(length=length, vocab_size=vocab_size)


def load_text(path: Path, n_rows: int) -> tuple[torch.Tensor, torch.Tensor, str, TextInput]:
    """``n_rows`` texts of ``text_data``'s file (its rows repeated when it has fewer): float32 token ids
    ``[N, length]``, labels int64 [N], the source and the layout."""
    from tunelab.inputs import TextInput

    data = torch.load(path)
    x, y, source = data["x"], data["y"], data["source"]
    if n_rows > len(x):
        source += f", {len(x):,} texts repeated"
    copies = -(-n_rows // len(x))
    text = TextInput(length=data["length"], vocab_size=data["vocab_size"])
    return x.repeat(copies, 1)[:n_rows].contiguous(), y.repeat(copies)[:n_rows], source, text


# ------------------------------------------------------------------------------------------ the eager loop


class _LastStep(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(28, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class _TextCNN(nn.Module):
    def __init__(self, vocab_size: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 64, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(64, 64, k) for k in (3, 4, 5))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(3 * 64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(x.long()).transpose(1, 2)  # [N, 64, L]
        pooled = [F.relu(conv(embedded)).amax(dim=2) for conv in self.convs]
        return self.head(torch.cat(pooled, dim=1))


class _TextLSTM(nn.Module):
    def __init__(self, vocab_size: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 64, padding_idx=0)
        self.rnn = nn.LSTM(64, 64, batch_first=True)
        self.head = nn.Sequential(nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        real = (ids != 0).unsqueeze(2).float()  # [N, L, 1]
        outputs = self.rnn(self.embedding(ids))[0]
        return self.head((outputs * real).sum(dim=1) / real.sum(dim=1).clamp(min=1))


def textbook_model(name: str, text: TextInput | None = None) -> nn.Module:
    """The model as a practitioner writes it; its state-dict keys are those of tunelab's build."""
    spec = MODELS[name]["spec"]
    if text is not None:
        make = _TextCNN if spec["encoder"] == "cnn" else _TextLSTM
        return make(text.vocab_size, MODELS[name]["classes"])
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


def sample_shape(name: str, text: TextInput | None) -> tuple[int, ...]:
    """One sample's shape: the model's image or sequence shape, or a text's ``(length + features,)``."""
    return (text.width,) if text is not None else tuple(MODELS[name]["shape"])


def tunelab_model(name: str, seed: int, text: TextInput | None = None) -> nn.Module:
    from tunelab.models import build_model

    shape = sample_shape(name, text)
    extra = {"text": text} if text is not None else {}  # a revision before the text models has no `text`
    classes = MODELS[name]["classes"]
    return build_model(MODELS[name]["spec"], input_shape=shape, output_dim=classes, seed=seed, **extra)


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
    Trainer(model, spec, task="classification", n_classes=MODELS[name]["classes"]).fit((x, y))
    return time.perf_counter() - started


def one_run(arm: str, name: str, rows: int, epochs: int, seed: int, data: Path | None) -> dict[str, Any]:
    """Train once in this process (after a warm-up) and return the seconds; ``data``: ``text_data``'s file
    for a text model."""
    torch.set_flush_denormal(True)  # as the tunelab command does, before any torch work
    text = None
    if data is not None:
        x, y, source, text = load_text(data, rows)
    else:
        x, y, source = load_data(rows, MODELS[name]["shape"])
    reference = tunelab_model(name, seed, text)  # the same initial weights for every arm
    warm = 2048 if text is None else 512
    if arm == "eager loop":
        model = textbook_model(name, text)
        model.load_state_dict(reference.state_dict())
        eager_loop(name, textbook_model(name, text), x[:warm], y[:warm], 1, seed)
        seconds = eager_loop(name, model, x, y, epochs, seed)
    else:
        trainer_fit(name, tunelab_model(name, seed, text), x[:warm], y[:warm], 1, seed)
        seconds = trainer_fit(name, reference, x, y, epochs, seed)
    return {"seconds": seconds, "source": source, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------ measurement


def forward_flops(name: str, text: TextInput | None = None) -> float:
    """Multiply-adds x 2 of one sample's forward pass, from the layers' shapes (embedding lookups: 0)."""
    model = tunelab_model(name, 0, text).eval()
    flops = 0.0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            out = output
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            flops += 2.0 * k * out.shape[1] * out.shape[2] * out.shape[3]
        elif isinstance(module, nn.Conv1d):  # all of its output positions, padded ones included
            k = module.kernel_size[0] * module.in_channels // module.groups
            flops += 2.0 * k * output.shape[1] * output.shape[2]
        elif isinstance(module, nn.Linear):
            flops += 2.0 * module.in_features * module.out_features
        elif isinstance(module, nn.LSTM):
            steps = inputs[0].shape[1]
            gates = 4 * module.hidden_size
            flops += 2.0 * steps * gates * (module.input_size + module.hidden_size) * module.num_layers

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *sample_shape(name, text)))
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


def spawn(
    arm: str, name: str, rows: int, epochs: int, seed: int, src: Path, data: Path | None
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--run", arm, "--model", name, "--rows", str(rows)]
    command += ["--epochs", str(epochs), "--seed", str(seed)]
    command += ["--data", str(data)] if data is not None else []
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {arm} run of {name} failed (exit status {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--before", metavar="REF", help="also time the Trainer of this git revision")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 rows (the text models: 4,096), 1 epoch, 3 repeats"
    )
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one run in this process (internal)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)  # text_data's file (internal)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(args.run, args.model, args.rows, args.epochs, args.seed, args.data)))
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
        texts = any(MODELS[name]["shape"] is None for name in names)
        data, text = text_data(Path(tmp)) if texts else (None, None)
        for name in names:
            is_text = MODELS[name]["shape"] is None
            rows = args.rows or (min(QUICK["rows"], FULL[name][0]) if args.quick else FULL[name][0])
            epochs = args.epochs or (QUICK["epochs"] if args.quick else FULL[name][1])
            repeats = args.repeats or (QUICK["repeats"] if args.quick else 5)
            seconds: dict[str, list[float]] = {arm: [] for arm in arms}
            source = "?"
            for repeat in range(repeats):
                order = arms[repeat % len(arms) :] + arms[: repeat % len(arms)]
                for arm in order:
                    result = spawn(
                        arm, name, rows, epochs, args.seed + repeat, sources[arm], data if is_text else None
                    )
                    seconds[arm].append(result["seconds"])
                    source = result["source"]
            layout = text if is_text else None
            records.append(report(name, seconds, rows * epochs, peak, source, repeats, layout))
    print(json.dumps({"bench": "train_loop", "peak_gflops": round(peak / 1e9, 1), "models": records,
                      "torch": torch.__version__, "machine": platform.machine(),
                      "load_average": [round(v, 2) for v in os.getloadavg()]}))  # fmt: skip


def report(
    name: str,
    seconds: dict[str, list[float]],
    samples: int,
    peak: float,
    source: str,
    repeats: int,
    text: TextInput | None,
) -> dict[str, Any]:
    spec = MODELS[name]
    train_flops = 3 * forward_flops(name, text)
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
