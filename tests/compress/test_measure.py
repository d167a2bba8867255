"""Measurements: multiply-adds (exact for Linear / Conv, the formula for recurrent layers), latency records on
onnxruntime and torch, the CPU's int8 flags, file sizes."""

from __future__ import annotations

import json
import os
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tunelab.compress import _measure
from tunelab.compress._measure import (
    Latency,
    count_macs,
    deflated_bytes,
    file_bytes,
    int8_capability,
    time_onnx,
    time_torch,
)
from tunelab.errors import DataError, MissingExtraError, SpecError
from tunelab.export import export_onnx
from tunelab.models import RNNSpec, build_model


def export(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """``model`` as tunelab exports it: ONNX opset 17, input ``input``, output ``output``, a dynamic batch."""
    pytest.importorskip("onnx")
    export_onnx(model.eval(), torch.zeros(1, *input_shape), path)
    return path


def test_macs_of_convolutions_and_linear_layers_are_exact():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8 out x 3 in x 3 x 3 kernel at 6 x 6 positions
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 10),
    )
    conv, linear = 8 * 3 * 3 * 3 * 6 * 6, 72 * 10
    assert count_macs(model, torch.zeros(1, 3, 6, 6)) == conv + linear
    assert count_macs(model, torch.zeros(4, 3, 6, 6)) == 4 * (conv + linear)  # the whole batch
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    assert count_macs(mlp, torch.zeros(1, 64)) == 64 * 256 + 256 * 10


@pytest.mark.parametrize(("cell", "gates"), [("lstm", 4), ("gru", 3), ("rnn", 1)])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True)])
def test_recurrent_macs_follow_the_formula(cell, gates, layers, bidirectional):
    """FlopCounterMode sees nothing of the fused CPU LSTM and decomposes GRU / RNN itself; either way the
    count is G * H * (I + H) per sample, step, layer and direction."""
    length, features, hidden, classes = 7, 5, 16, 3
    spec = RNNSpec(cell=cell, hidden_size=hidden, n_layers=layers, bidirectional=bidirectional)
    model = build_model(spec, input_shape=(length, features), output_dim=classes, seed=0)
    directions = 2 if bidirectional else 1
    per_step = directions * gates * hidden * (features + hidden)
    per_step += (layers - 1) * directions * gates * hidden * (directions * hidden + hidden)
    head = directions * hidden * classes
    assert count_macs(model, torch.zeros(1, length, features)) == length * per_step + head
    assert count_macs(model, torch.zeros(2, length, features)) == 2 * (length * per_step + head)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_lstm_with_a_projection_and_unbatched_input():
    lstm = nn.LSTM(6, 20, proj_size=4)
    # per step: 4 gates x 20 x (6 inputs + 4 projected state) + the 4 x 20 projection
    assert count_macs(lstm, torch.zeros(9, 6)) == 9 * (4 * 20 * (6 + 4) + 4 * 20)


def test_counting_leaves_modes_grad_mode_and_hooks_as_they_were():
    model = build_model(RNNSpec(cell="lstm", hidden_size=8), input_shape=(4, 3), output_dim=2, seed=0)
    model.train()
    model.head.eval()
    count_macs(model, torch.zeros(1, 4, 3))
    assert (model.training, model.rnn.training, model.head.training) == (True, True, False)
    assert torch.is_grad_enabled()
    assert not model.rnn._forward_hooks
    assert not model.rnn._forward_pre_hooks


class _Probe(nn.Module):
    """Records, at each forward, the thread count, the train flag and whether inference mode is on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)
        self.seen: list[tuple[int, bool, bool, tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.get_num_threads(), self.training, torch.is_inference_mode_enabled(), x.shape))
        return self.linear(x)


def _check_records(records: list[Latency], runtime: str, batches: tuple[int, ...], threads: int) -> None:
    assert [record.batch for record in records] == list(batches)
    for record in records:
        assert record.runtime == runtime
        assert record.threads == threads
        assert record.runs >= 30
        assert record.median_ms > 0
        assert record.iqr_ms >= 0
        assert record.samples_per_second == pytest.approx(record.batch / (record.median_ms / 1e3))
        assert json.loads(json.dumps(record.to_dict())) == record.to_dict()
        assert set(record.to_dict()) == {
            "runtime",
            "batch",
            "threads",
            "runs",
            "median_ms",
            "iqr_ms",
            "samples_per_second",
        }


def test_time_torch_runs_in_eval_and_inference_mode_on_the_threads_asked():
    torch.set_num_threads(2)
    probe = _Probe().train()
    records = time_torch(probe, (6,), batches=(1, 16), threads=1, warmup=3)
    _check_records(records, "torch", (1, 16), threads=1)
    assert len(probe.seen) == 3 + records[0].runs + 3 + records[1].runs
    assert {(threads, training, inference) for threads, training, inference, _ in probe.seen} == {
        (1, False, True)
    }
    assert [shape[0] for *_, shape in probe.seen] == [1] * (3 + records[0].runs) + [16] * (
        3 + records[1].runs
    )
    assert torch.get_num_threads() == 2
    assert probe.training


def test_time_onnx_gives_a_record_per_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    path = export(nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4)), (12,), tmp_path / "mlp.onnx")
    records = time_onnx(path, (12,), batches=(1, 64), threads=1, runs=30)
    _check_records(records, "onnxruntime", (1, 64), threads=1)


def test_timing_runs_past_runs_until_min_seconds(monkeypatch):
    """On a clock that moves one tick (1/1024 s, exact in binary) per reading, each call lasts a tick: 5 runs
    take 5 ticks, so 20 ticks of timing need 20 runs."""
    tick = 1 / 1024
    readings = iter(range(1_000_000))
    monkeypatch.setattr(_measure, "time", types.SimpleNamespace(perf_counter=lambda: next(readings) * tick))
    (record,) = time_torch(nn.Linear(3, 2), (3,), batches=(8,), warmup=0, runs=5, min_seconds=20 * tick)
    assert record.runs == 20
    assert record.median_ms == pytest.approx(tick * 1e3)
    assert record.iqr_ms == 0
    assert record.samples_per_second == pytest.approx(8 / tick)
    (record,) = time_torch(nn.Linear(3, 2), (3,), batches=(8,), warmup=0, runs=30, min_seconds=20 * tick)
    assert record.runs == 30


def test_time_onnx_without_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'tunelab\[onnx\]'"):
        time_onnx(path, (4,))


def test_time_onnx_errors_say_what_to_fix(tmp_path):
    pytest.importorskip("onnxruntime")
    path = export(nn.Linear(5, 2), (5,), tmp_path / "linear.onnx")
    with pytest.raises(SpecError, match=r"(?s)input \[1, 7\].*input_shape"):
        time_onnx(path, (7,), batches=(1,))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(SpecError, match="cannot load"):
        time_onnx(broken, (5,))
    with pytest.raises(DataError, match="is not a file"):
        time_onnx(tmp_path / "missing.onnx", (5,))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"runs": 0}, "runs must be >= 1"),
        ({"batches": ()}, "batches must be one or more positive ints"),
        ({"batches": (1, 0)}, "batches must be"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"min_seconds": float("nan")}, "min_seconds"),
    ],
)
def test_bad_timing_options_are_spec_errors(options, match):
    with pytest.raises(SpecError, match=match):
        time_torch(nn.Linear(3, 2), (3,), **options)


def test_int8_capability_reads_the_cpu_flags(tmp_path):
    info = int8_capability()
    assert set(info) == {"cpu", "avx2", "avx512_vnni", "avx_vnni", "amx_int8", "vnni", "logical_cpus"}
    assert info["logical_cpus"] == os.cpu_count()
    assert info["vnni"] == (info["avx512_vnni"] or info["avx_vnni"])
    fake = tmp_path / "cpuinfo"
    processor = "model name\t: Example Xeon\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8\n"
    fake.write_text(f"processor\t: 0\n{processor}\nprocessor\t: 1\n{processor}")
    assert int8_capability(fake) == {
        "cpu": "Example Xeon",
        "avx2": True,
        "avx512_vnni": True,
        "avx_vnni": False,
        "amx_int8": True,
        "vnni": True,
        "logical_cpus": os.cpu_count(),
    }
    elsewhere = int8_capability(tmp_path / "missing")  # not Linux: no flags
    assert not any(elsewhere[key] for key in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "vnni"))


def test_file_sizes_plain_and_deflated(tmp_path):
    rng = np.random.default_rng(0)
    dense = tmp_path / "dense.bin"
    dense.write_bytes(rng.standard_normal(400_000).astype(np.float32).tobytes())  # 1.6 MB, past one chunk
    sparse_values = rng.standard_normal(400_000).astype(np.float32)
    sparse_values[rng.random(400_000) < 0.9] = 0.0
    sparse = tmp_path / "sparse.bin"
    sparse.write_bytes(sparse_values.tobytes())
    assert file_bytes(dense) == file_bytes(sparse) == 1_600_000
    for path in (dense, sparse):
        assert deflated_bytes(path) == len(zlib.compress(path.read_bytes(), 9))  # streaming = one shot
    assert deflated_bytes(sparse) < 0.3 * file_bytes(sparse)
    assert deflated_bytes(dense) > 0.8 * file_bytes(dense)
    with pytest.raises(DataError, match="is not a file"):
        file_bytes(tmp_path / "missing.onnx")
    with pytest.raises(DataError, match="is not a file"):
        deflated_bytes(tmp_path)
