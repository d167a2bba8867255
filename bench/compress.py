"""Compression, measured (issue #16): int8, slimming, distillation and the whole `tunelab compress` command.

Every ratio is measured side by side in one process: the models compared are timed in interleaved rounds
(A B A B ...) on onnxruntime's CPU provider with one thread (or torch with one thread), >= 30 timed runs per
round after a warm-up, medians. Accuracy comparisons run on three seeds (three tuned CNNs, three trained
MLPs / LSTMs, three student seeds) and are reported as medians and ranges (distillation: means with 95%
t-intervals).

Parts (``--parts``, all by default):

- ``int8-cnn``    must-show 1: static int8 of the tuned Fashion-MNIST CNNs (``--runs``): size, test accuracy
                  drop, throughput at batch 256 and latency at batch 1 against the fp32 graph; both static
                  formats (QOperator, QDQ).
- ``int8-dense``  must-show 2: dynamic int8 of a Fashion-MNIST MLP and of an LSTM reading the images by rows
                  (28 steps of 28 pixels), trained here per seed; and a sweep of widths / hidden sizes
                  (untrained: latency depends on the structure only) with the plot of where int8 stops paying.
- ``slim``        must-show 3: the tuned CNN slimmed to <= 50% of its multiply-adds and fine-tuned; the
                  LSTM's hidden size halved (gate-aware) and fine-tuned.
- ``distill``     must-show 4: a CNN student with <= 25% of the teacher's parameters, trained from scratch
                  with and without the teacher, three seeds each; the teacher is the first tuned run's
                  model, or one trained here (``--teacher CHANNELS:DENSE:EPOCHS``, no runs needed).
- ``command``     must-show 5: ``tunelab compress RUN --budget 10m`` on each tuned CNN (a subprocess each).

    python bench/compress.py --runs RUN0 RUN1 RUN2       # tuned CNN run directories (see below)
    python bench/compress.py --runs RUN0 --parts int8-cnn --quick

The tuned runs are ``tunelab tune --data fashion-mnist --budget 15m --seed S --out RUN`` (S = 0, 1, 2; the
zero-config CNN, issue #14). Writes ``bench/results/compress.json`` and ``bench/results/int8_width.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.compress import (
    count_macs,
    file_bytes,
    int8_capability,
    quantize_onnx,
    slim_model,
    time_onnx,
)
from tunelab.data import DataSpec, prepare_data
from tunelab.export import export_onnx, load
from tunelab.models import CNNSpec, MLPSpec, RNNSpec, build_model, count_parameters
from tunelab.train import DistillSpec, Trainer, TrainSpec, flush_denormals

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("int8-cnn", "int8-dense", "slim", "distill", "command")
SEEDS = (0, 1, 2)


# ---------------------------------------------------------------------------------------------- helpers


def onnx_of(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    export_onnx(copy.deepcopy(model).cpu().eval(), example[:2].cpu(), path)
    return path


def side_by_side(
    files: dict[str, Path], input_shape: tuple[int, ...], batches: tuple[int, ...], rounds: int = 3
) -> dict[str, dict[int, float]]:
    """Median latency (ms) per file and batch over ``rounds`` interleaved rounds of >= 30 runs, one thread."""
    seen: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in files}
    for _ in range(rounds):
        for name, path in files.items():
            for lat in time_onnx(path, input_shape, batches=batches, threads=1, runs=30):
                seen[name][lat.batch].append(lat.median_ms)
    return {name: {b: statistics.median(v) for b, v in per.items()} for name, per in seen.items()}


def onnx_accuracy(path: Path, x: torch.Tensor, y: torch.Tensor) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    predictions = []
    for start in range(0, len(x), 1000):
        (out,) = session.run(None, {"input": x[start : start + 1000].numpy()})
        predictions.append(out.argmax(axis=1))
    return float((np.concatenate(predictions) == y.numpy()).mean())


def calibration_rows(x: torch.Tensor, n: int = 256, seed: int = 0) -> np.ndarray:
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[rows].numpy().astype(np.float32)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 95% t-interval (n = 3: t = 4.303)."""
    from scipy import stats

    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def fit(
    model: torch.nn.Module, spec: TrainSpec, bundle: Any, *, teacher: torch.Tensor | None = None
) -> Trainer:
    trainer = Trainer(model, spec, task="classification", n_classes=bundle.n_classes)
    trainer.fit((bundle.X_train, bundle.y_train), teacher=teacher)
    return trainer


def test_accuracy(trainer: Trainer, bundle: Any) -> float:
    return trainer.evaluate(bundle.X_test, bundle.y_test)["accuracy"]


def fmnist(seed: int = 0) -> Any:
    return prepare_data(DataSpec(source="fashion-mnist"), seed=seed)


def run_data(run: Path) -> Any:
    """The tuned run's own split (its spec's seed): the rows its teacher trained on are the training rows."""
    from tunelab.spec import load_spec

    return fmnist(load_spec(run / "spec.yaml").seed)


# ---------------------------------------------------------------------------------------------- parts


INT8_CNN = {  # name: (format, first layer kept float)
    "qoperator": ("qoperator", False),
    "qdq": ("qdq", False),
    "qoperator_first_float": ("qoperator", True),
    "qdq_first_float": ("qdq", True),
}


def part_int8_cnn(runs: list[Path], work: Path, quick: bool) -> dict[str, Any]:
    """Static int8 (per-channel weights, 256 calibration rows, min-max) in both onnxruntime formats, with and
    without the first convolution kept float, against the fp32 graph of the same tuned CNN."""
    rows = []
    for run in runs:
        exported = load(run, backend="weights")
        bundle = run_data(run)
        x_test = bundle.X_test[:2000] if quick else bundle.X_test
        y_test = bundle.y_test[:2000] if quick else bundle.y_test
        fp32 = onnx_of(exported.module, bundle.X_train, work / f"{run.name}-fp32.onnx")
        calib = calibration_rows(bundle.X_train)
        files = {"fp32": fp32}
        for name, (fmt, first) in INT8_CNN.items():
            files[name] = quantize_onnx(
                fp32,
                work / f"{run.name}-{name}.onnx",
                mode="static",
                calibration=calib,
                fmt=fmt,  # type: ignore[arg-type]
                keep_first=first,
            )
        latency = side_by_side(files, bundle.input_shape, (1, 256))
        accuracy = {name: onnx_accuracy(path, x_test, y_test) for name, path in files.items()}
        row: dict[str, Any] = {
            "run": str(run),
            "accuracy": accuracy,
            "latency_ms": latency,
            "bytes": {k: file_bytes(v) for k, v in files.items()},
        }
        for name in INT8_CNN:
            row[name] = {
                "smaller": row["bytes"]["fp32"] / row["bytes"][name],
                "drop_points": 100 * (accuracy["fp32"] - accuracy[name]),
                "throughput_256": latency["fp32"][256] / latency[name][256],
                "speed_1": latency["fp32"][1] / latency[name][1],
            }
        print(f"int8-cnn {run.name}: " + json.dumps({f: row[f] for f in INT8_CNN}), flush=True)
        rows.append(row)
    out: dict[str, Any] = {"runs": rows}
    for name in INT8_CNN:
        out[name] = {key: summary([r[name][key] for r in rows]) for key in rows[0][name]}
    return out


def _row_lstm(hidden: int) -> RNNSpec:
    return RNNSpec(cell="lstm", hidden_size=hidden)


def _as_rows(bundle: Any) -> Any:
    """Fashion-MNIST images [N, 1, 28, 28] as sequences [N, 28, 28] (one image row per step)."""
    import dataclasses

    return dataclasses.replace(
        bundle,
        X_train=bundle.X_train[:, 0],
        X_val=bundle.X_val[:, 0],
        X_test=bundle.X_test[:, 0],
        input_shape=(28, 28),
        kind="sequence",
    )


def train_dense(seed: int, quick: bool) -> dict[str, Any]:
    """A Fashion-MNIST MLP (hidden 512, 256) and a row-by-row LSTM (hidden 128), trained for this seed."""
    bundle = fmnist(0)
    epochs = 1 if quick else 5
    mlp_spec = MLPSpec(hidden=[512, 256], dropout=0.1)
    mlp = build_model(mlp_spec, input_shape=bundle.input_shape, output_dim=10, seed=seed)
    mlp_trainer = fit(mlp, TrainSpec(epochs=epochs, lr=1e-3, batch_size=128, seed=seed), bundle)
    rows = _as_rows(bundle)
    lstm_spec = _row_lstm(128)
    lstm = build_model(lstm_spec, input_shape=(28, 28), output_dim=10, seed=seed)
    lstm_trainer = fit(lstm, TrainSpec(epochs=1 if quick else 4, lr=2e-3, batch_size=128, seed=seed), rows)
    return {"bundle": bundle, "rows": rows, "mlp": (mlp_spec, mlp_trainer), "lstm": (lstm_spec, lstm_trainer)}


def part_int8_dense(trained: dict[int, dict[str, Any]], work: Path, quick: bool) -> dict[str, Any]:
    rows = []
    for seed, models in trained.items():
        row: dict[str, Any] = {"seed": seed}
        for name, data_key in (("mlp", "bundle"), ("lstm", "rows")):
            data = models[data_key]
            _spec, trainer = models[name]
            fp32 = onnx_of(trainer.model, data.X_train, work / f"{name}{seed}-fp32.onnx")
            int8 = quantize_onnx(fp32, work / f"{name}{seed}-int8.onnx", mode="dynamic", per_channel=False)
            latency = side_by_side({"fp32": fp32, "int8": int8}, data.input_shape, (1, 256))
            acc = {k: onnx_accuracy(p, data.X_test, data.y_test) for k, p in (("fp32", fp32), ("int8", int8))}
            row[name] = {
                "accuracy": acc,
                "smaller": file_bytes(fp32) / file_bytes(int8),
                "drop_points": 100 * (acc["fp32"] - acc["int8"]),
                "speed_1": latency["fp32"][1] / latency["int8"][1],
                "throughput_256": latency["fp32"][256] / latency["int8"][256],
            }
        print(f"int8-dense seed {seed}: " + json.dumps({k: row[k] for k in ("mlp", "lstm")}), flush=True)
        rows.append(row)
    out: dict[str, Any] = {"seeds": rows}
    for name in ("mlp", "lstm"):
        out[name] = {
            key: summary([r[name][key] for r in rows])
            for key in ("smaller", "drop_points", "speed_1", "throughput_256")
        }
    out["sweep"] = width_sweep(work, quick)
    return out


def width_sweep(work: Path, quick: bool) -> dict[str, Any]:
    """int8 (dynamic) against fp32 speed for MLPs [784 -> w -> w -> 10] and row LSTMs of hidden h."""
    sweep: dict[str, Any] = {"mlp": [], "lstm": []}
    widths = (32, 128, 512) if quick else (16, 32, 64, 128, 256, 512, 1024, 2048)
    hiddens = (16, 64, 256) if quick else (8, 16, 32, 64, 128, 256, 512)
    for kind, sizes in (("mlp", widths), ("lstm", hiddens)):
        for size in sizes:
            if kind == "mlp":
                model = build_model(
                    MLPSpec(hidden=[size, size]), input_shape=(1, 28, 28), output_dim=10, seed=0
                )
                shape: tuple[int, ...] = (1, 28, 28)
            else:
                model = build_model(_row_lstm(size), input_shape=(28, 28), output_dim=10, seed=0)
                shape = (28, 28)
            fp32 = onnx_of(model, torch.randn(2, *shape), work / f"sweep-{kind}{size}.onnx")
            int8 = quantize_onnx(
                fp32, work / f"sweep-{kind}{size}-int8.onnx", mode="dynamic", per_channel=False
            )
            latency = side_by_side({"fp32": fp32, "int8": int8}, shape, (1, 256), rounds=2)
            sweep[kind].append(
                {"size": size, **{f"speedup_{b}": latency["fp32"][b] / latency["int8"][b] for b in (1, 256)}}
            )
            print(f"sweep {kind} {size}: {sweep[kind][-1]}", flush=True)
    plot_sweep(sweep, RESULTS / "int8_width.png")
    return sweep


def plot_sweep(sweep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind, label in (
        (axes[0], "mlp", "MLP width (two hidden layers)"),
        (axes[1], "lstm", "LSTM hidden size"),
    ):
        sizes = [r["size"] for r in sweep[kind]]
        for batch, style in ((1, "o-"), (256, "s--")):
            ax.plot(sizes, [r[f"speedup_{batch}"] for r in sweep[kind]], style, label=f"batch {batch}")
        ax.axhline(1.0, color="grey", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("int8 (dynamic) speed / fp32 speed")
    axes[0].legend()
    cpu = int8_capability()
    fig.suptitle(
        f"Where dynamic int8 pays on onnxruntime, 1 thread ({cpu.get('cpu', '?')}; VNNI: {cpu.get('vnni')})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def part_slim(
    runs: list[Path], trained: dict[int, dict[str, Any]], work: Path, quick: bool
) -> dict[str, Any]:
    """The tuned CNN slimmed to 0.6 and 0.5 of its widths (units ranked by batch-norm scale), fine-tuned 5
    epochs at the winner's learning rate (cosine), no teacher; the LSTM's hidden size halved, 2 epochs."""
    out: dict[str, Any] = {"cnn": [], "lstm": []}
    for i, run in enumerate(runs):
        exported = load(run, backend="weights")
        spec = CNNSpec.model_validate(exported.metadata["model_spec"])
        bundle = run_data(run)
        teacher = exported.module.eval()
        teacher_trainer = Trainer(teacher, TrainSpec(), task="classification", n_classes=10)
        teacher_acc = test_accuracy(teacher_trainer, bundle)
        files = {"teacher": onnx_of(teacher, bundle.X_train, work / f"slim-t{i}.onnx")}
        rows = []
        for ratio in (0.6, 0.5):
            _spec, student = slim_model(
                teacher,
                spec,
                ratio,
                criterion="bn" if spec.batch_norm else "l1",
                input_shape=bundle.input_shape,
                output_dim=10,
            )
            one = bundle.X_train[:1]
            macs = (count_macs(teacher, one), count_macs(student, one))
            spec_ft = TrainSpec(
                epochs=1 if quick else 5,
                lr=1e-3,
                batch_size=64,
                weight_decay=1e-4,
                schedule={"name": "cosine"},
                seed=i,
            )
            trainer = fit(student, spec_ft, bundle)
            acc = test_accuracy(trainer, bundle)
            files[f"slim{ratio}"] = onnx_of(trainer.model, bundle.X_train, work / f"slim-s{i}-{ratio}.onnx")
            rows.append(
                {
                    "run": str(run),
                    "ratio": ratio,
                    "macs": macs,
                    "mac_share": macs[1] / macs[0],
                    "params": (count_parameters(teacher), count_parameters(trainer.model)),
                    "accuracy": (teacher_acc, acc),
                    "drop_points": 100 * (teacher_acc - acc),
                }
            )
        latency = side_by_side(files, bundle.input_shape, (1, 256))
        for row in rows:
            name = f"slim{row['ratio']}"
            row["speed_256"] = latency["teacher"][256] / latency[name][256]
            row["speed_1"] = latency["teacher"][1] / latency[name][1]
            print(f"slim cnn {run.name}: {row}", flush=True)
        out["cnn"] += rows
    for seed, models in trained.items():
        rows_data = models["rows"]
        spec, trainer = models["lstm"]
        teacher = trainer.model.eval()
        slim_spec_, student = slim_model(
            teacher, spec, 0.5, criterion="l1", input_shape=(28, 28), output_dim=10
        )
        spec_ft = TrainSpec(
            epochs=1 if quick else 2, lr=2e-3, batch_size=128, schedule={"name": "cosine"}, seed=seed
        )
        student_trainer = fit(student, spec_ft, rows_data)
        acc = (test_accuracy(trainer, rows_data), test_accuracy(student_trainer, rows_data))
        row = {
            "seed": seed,
            "hidden": (spec.hidden_size, slim_spec_.hidden_size),
            "params": (count_parameters(teacher), count_parameters(student_trainer.model)),
            "fewer_params": count_parameters(teacher) / count_parameters(student_trainer.model),
            "accuracy": acc,
            "drop_points": 100 * (acc[0] - acc[1]),
        }
        print(f"slim lstm seed {seed}: {row}", flush=True)
        out["lstm"].append(row)
    out["cnn_summary"] = {
        str(ratio): {
            k: summary([r[k] for r in out["cnn"] if r["ratio"] == ratio])
            for k in ("mac_share", "drop_points", "speed_256", "speed_1")
        }
        for ratio in (0.6, 0.5)
    }
    out["lstm_summary"] = {k: summary([r[k] for r in out["lstm"]]) for k in ("fewer_params", "drop_points")}
    return out


def distill_recipe(epochs: int, seed: int, distill: DistillSpec | None = None) -> TrainSpec:
    """How the distillation part trains its students, and a teacher trained here: Adam 2e-3, cosine, batch
    64, weight decay 1e-4; ``distill``: learning from the teacher too."""
    return TrainSpec(
        epochs=epochs,
        lr=2e-3,
        batch_size=64,
        weight_decay=1e-4,
        schedule={"name": "cosine"},
        seed=seed,
        distill=distill,
    )


def trained_teacher(recipe: str, quick: bool) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """A teacher trained here from ``recipe`` (``[Mx]CHANNELS:DENSE:EPOCHS``, e.g. ``64,128:256:20``, or
    ``3x32,64:128:10`` for an ensemble of three) on seed 0's split of Fashion-MNIST: CNNs with batch norm and
    dropout 0.1 trained as the students are (Adam 2e-3, cosine, batch 64, weight decay 1e-4), seeds 0..M-1;
    an ensemble averages its members' probabilities.
    Returns the teacher's outputs on the training rows (log-probabilities), the data and what it scored."""
    members, _, rest = recipe.rpartition("x")
    channels, dense, epochs = rest.split(":")
    spec = CNNSpec(
        channels=[int(c) for c in channels.split(",")],
        dense=[int(d) for d in dense.split(",")],
        batch_norm=True,
        dropout=0.1,
    )
    bundle = fmnist(0)
    started = time.perf_counter()
    train_out, test_out, params = [], [], 0
    for seed in range(int(members or 1)):
        model = build_model(spec, input_shape=bundle.input_shape, output_dim=10, seed=seed)
        params += count_parameters(model)
        trainer = fit(model, distill_recipe(1 if quick else int(epochs), seed), bundle)
        train_out.append(torch.log_softmax(trainer.outputs(bundle.X_train).cpu(), dim=1))
        test_out.append(torch.log_softmax(trainer.outputs(bundle.X_test).cpu(), dim=1))
        print(f"teacher member {seed}: test {test_accuracy(trainer, bundle):.4f}", flush=True)

    def averaged(outputs: list[torch.Tensor]) -> torch.Tensor:  # log of the mean probability
        return torch.logsumexp(torch.stack(outputs), dim=0) - math.log(len(outputs))

    def accuracy(outputs: list[torch.Tensor], y: torch.Tensor) -> float:
        return float((averaged(outputs).argmax(dim=1) == y.cpu()).float().mean())

    about = {
        "recipe": recipe,
        "parameters": params,
        "test_accuracy": accuracy(test_out, bundle.y_test),
        "train_accuracy": accuracy(train_out, bundle.y_train),
        "train_seconds": time.perf_counter() - started,
    }
    print(f"teacher {recipe}: {about}", flush=True)
    return averaged(train_out), bundle, about


def part_distill(
    runs: list[Path],
    quick: bool,
    *,
    student: tuple[list[int], list[int]] = ([16, 32], [48]),
    temperature: float = 4.0,
    weight: float = 0.7,
    epochs: int = 10,
    teacher_recipe: str | None = None,
) -> dict[str, Any]:
    """A student CNN (<= 25% of the teacher's parameters) from scratch, with and without the teacher (the
    first tuned run, or one trained here from ``teacher_recipe``), three seeds; same epochs, schedule and
    seeds on both sides."""
    if teacher_recipe is not None:
        teacher_out, bundle, about = trained_teacher(teacher_recipe, quick)
        teacher_params = about["parameters"]
    else:
        teacher, bundle = load(runs[0], backend="weights").module.eval(), run_data(runs[0])
        teacher_out = (
            Trainer(teacher, TrainSpec(), task="classification", n_classes=10).outputs(bundle.X_train).cpu()
        )
        about, teacher_params = {"run": str(runs[0])}, count_parameters(teacher)
    student_spec = CNNSpec(channels=student[0], dense=student[1], batch_norm=True, dropout=0.1)
    scores: dict[str, list[float]] = {"alone": [], "distilled": []}
    params = None
    for seed in SEEDS[:1] if quick else SEEDS:
        for side in ("alone", "distilled"):
            student = build_model(student_spec, input_shape=bundle.input_shape, output_dim=10, seed=seed)
            params = count_parameters(student)
            distill = DistillSpec(temperature=temperature, weight=weight) if side == "distilled" else None
            spec = distill_recipe(1 if quick else epochs, seed, distill)
            trainer = fit(student, spec, bundle, teacher=teacher_out if side == "distilled" else None)
            scores[side].append(test_accuracy(trainer, bundle))
            print(f"distill seed {seed} {side}: {scores[side][-1]:.4f}", flush=True)
    out: dict[str, Any] = {
        "teacher": about,
        "teacher_params": teacher_params,
        "student_params": params,
        "share": params / teacher_params,
        "student": {"channels": student[0], "dense": student[1], "epochs": epochs},
        "temperature": temperature,
        "weight": weight,
        "scores": scores,
    }
    if not quick:
        out["alone"] = t_interval(scores["alone"])
        out["distilled"] = t_interval(scores["distilled"])
        out["gain_points"] = 100 * (out["distilled"][0] - out["alone"][0])
        out["intervals_overlap"] = out["distilled"][1] <= out["alone"][2]
    return out


def part_command(runs: list[Path], work: Path, budget: str) -> dict[str, Any]:
    rows = []
    for run in runs:
        copy_dir = work / f"cmd-{run.name}"
        shutil.copytree(run, copy_dir)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tunelab.cli", "compress", str(copy_dir), "--budget", budget, "--quiet"],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            raise SystemExit(f"tunelab compress failed on {run}")
        record = json.loads((copy_dir / "compression.json").read_text())
        original = record["original"]
        best_combo = None
        for entry in record["front"]:
            smaller = original["deflated_bytes"] / entry["deflated_bytes"]
            raw_smaller = original["bytes"] / entry["bytes"]
            faster = original["latency_ms"]["256"] / entry["latency_ms"]["256"]
            if best_combo is None or (smaller >= 8 and faster > best_combo["faster_256"]):
                best_combo = {
                    "trial": entry["trial"],
                    "smaller": smaller,
                    "raw_smaller": raw_smaller,
                    "faster_256": faster,
                    "val": entry["val_score"],
                    "knobs": entry["knobs"],
                }
        pick = record["pick"]
        row = {
            "run": str(run),
            "wall_s": wall,
            "front": len(record["front"]),
            "screened_share": record["candidates"]["screened_share"],
            "trained": record["candidates"]["trained"],
            "screened": record["candidates"]["screened"],
            "pick": pick,
            "eight_x": best_combo,
            "front_rows": record["front"],
            "original": original,
        }
        print(
            f"command {run.name}: front {row['front']}, screened {row['screened_share']:.0%}, "
            f"pick {pick.get('test')}",
            flush=True,
        )
        rows.append(row)
    return {"runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, nargs="*", default=[], help="tuned Fashion-MNIST CNN run directories"
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--budget", default="10m", help="tunelab compress's budget in the 'command' part")
    parser.add_argument("--quick", action="store_true", help="one seed, one epoch, a 2,000-image test part")
    parser.add_argument("--out", type=Path, default=RESULTS / "compress.json")
    parser.add_argument("--student", default="16,32:48", help="distill: student channels:dense")
    parser.add_argument("--temperature", type=float, default=4.0, help="distill: temperature")
    parser.add_argument("--weight", type=float, default=0.7, help="distill: the soft term's weight")
    parser.add_argument("--distill-epochs", type=int, default=10)
    parser.add_argument(
        "--teacher",
        metavar="CHANNELS:DENSE:EPOCHS",
        help="distill: train this teacher here (64,128:256:20; 3x32,64:128:10 for an ensemble of three) "
        "instead of using the first tuned run's model",
    )
    args = parser.parse_args()
    needs_runs = set(args.parts) - ({"int8-dense", "distill"} if args.teacher else {"int8-dense"})
    if needs_runs and not args.runs:
        parser.error(f"--runs: the parts {', '.join(sorted(needs_runs))} need the tuned runs")
    flush_denormals()
    torch.set_num_threads(2)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cpu": int8_capability(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trained: dict[int, dict[str, Any]] = {}
        if {"int8-dense", "slim"} & set(args.parts):
            for seed in SEEDS[:1] if args.quick else SEEDS:
                trained[seed] = train_dense(seed, args.quick)
        if "int8-cnn" in args.parts:
            results["int8_cnn"] = part_int8_cnn(args.runs, work, args.quick)
        if "int8-dense" in args.parts:
            results["int8_dense"] = part_int8_dense(trained, work, args.quick)
        if "slim" in args.parts:
            results["slim"] = part_slim(args.runs, trained, work, args.quick)
        if "distill" in args.parts:
            channels, dense = (list(map(int, part.split(","))) for part in args.student.split(":"))
            results["distill"] = part_distill(
                args.runs,
                args.quick,
                student=(channels, dense),
                temperature=args.temperature,
                weight=args.weight,
                epochs=args.distill_epochs,
                teacher_recipe=args.teacher,
            )
        if "command" in args.parts:
            results["command_part"] = part_command(args.runs, work, args.budget)
    results["elapsed_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out} ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
