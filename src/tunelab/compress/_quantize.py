"""Int8 quantization of an exported ONNX graph with onnxruntime's tools (optional extra ``onnx``).

Two modes. ``dynamic``: weights int8 ahead of time, activations quantized per call from their own range; for
matrix products and LSTMs only (MatMul, Gemm, LSTM, Attention), never convolutions, whose dynamic int8
kernels (ConvInteger) are slower than float on CPUs. ``static``: weights and activations int8, activation
ranges calibrated on training rows; convolutions included. Which pays on a given CPU is measured
(``tunelab.compress`` times each candidate), never assumed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from tunelab.errors import DataError, MissingExtraError, SpecError

__all__ = [
    "CALIBRATION_BATCH",
    "DYNAMIC_OP_TYPES",
    "CalibrationName",
    "QuantFormatName",
    "QuantMode",
    "nodes_quantized",
    "quantize_onnx",
]

QuantMode = Literal["dynamic", "static"]
CalibrationName = Literal["minmax", "entropy", "percentile"]
QuantFormatName = Literal["qdq", "qoperator"]

# Asked for in dynamic mode, as far as the installed onnxruntime quantizes them (1.32: not GRU). Gemm is
# turned into MatMul by the dynamic quantizer. Conv is left out on purpose.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "LSTM", "GRU", "Attention")
CALIBRATION_BATCH = 32  # rows per calibration call


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    *,
    mode: QuantMode,
    calibration: np.ndarray | None = None,
    method: CalibrationName = "minmax",
    per_channel: bool = True,
    fmt: QuantFormatName = "qoperator",
    keep_first: bool = False,
) -> Path:
    """Write an int8 version of the ONNX model ``src`` (one float32 input ``input``) to ``dst``; returns it.

    Both modes first run onnxruntime's ``quant_pre_process`` (shape inference, graph optimization); weights
    are signed int8, per output channel when ``per_channel``, else one scale per tensor. ``reduce_range``
    (7-bit weights) is not used: a static per-channel CNN ran 4-7x slower with it, or per-tensor, on an AVX2
    CPU. Accuracy is the caller's to check: on an AVX2 CPU without VNNI, u8 x s8 products sum in saturating
    16-bit pairs, and a per-channel dynamic LSTM's outputs were 19% off float (per-tensor: 4%).

    - ``mode="dynamic"``: ``quantize_dynamic`` over :data:`DYNAMIC_OP_TYPES` (those the installed version
      accepts; never Conv; onnxruntime 1.32 has no int8 GRU, which stays float). ``calibration``,
      ``method`` and ``fmt`` do not apply.
    - ``mode="static"``: ``quantize_static`` (LSTM and GRU stay float: onnxruntime has no static int8 for
      them; their heads are quantized), activations uint8 with ranges from ``calibration``: float32 rows
      ``[N, *input_shape]`` (training rows, a few hundred suffice), fed ``CALIBRATION_BATCH`` at a time
      (the last batch ends at the last row and overlaps the one before it);
      ``method`` maps to onnxruntime's ``CalibrationMethod``; ``fmt`` is ``"qoperator"`` (QLinearConv,
      QGemm...: on an AVX2 CPU 1.27x the float throughput of a Fashion-MNIST CNN at batch 256) or ``"qdq"``
      (QuantizeLinear / DequantizeLinear around float ops, for runtimes that fuse them; 0.83x there).

    ``keep_first``: the graph's first weighted node (Conv, Gemm, MatMul, LSTM) stays float. A first
    convolution over one or three input channels has few multiply-adds to gain and its inputs' range is the
    widest: on a Fashion-MNIST CNN (AVX2) keeping it float turned a 1.2-point accuracy loss of static QDQ
    into none, and was faster too (BENCHMARKS.md).

    ``dst`` is written only when quantization succeeds; temporary models (the pre-processed graph,
    calibration's augmented graph) live in temporary directories that are removed. Raises
    :class:`MissingExtraError` without onnx / onnxruntime, :class:`SpecError` for bad options, missing or
    misshapen calibration rows, or a graph onnxruntime cannot quantize, :class:`DataError` for a missing
    ``src`` or calibration rows that are not finite. Models over 2 GB (external data) are not supported.
    """
    src, dst = Path(src), Path(dst)
    _check_choice("mode", mode, QuantMode)
    _check_choice("method", method, CalibrationName)
    _check_choice("fmt", fmt, QuantFormatName)
    if not src.is_file():
        raise DataError(
            f"'{src}' is not a file. Expected an ONNX model (as tunelab's export writes model.onnx)."
        )
    onnx, quantization = _import_quantization()
    rows = _calibration_rows(calibration, _input_shape(onnx, src)) if mode == "static" else None

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tunelab-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        written = Path(scratch) / "quantized.onnx"
        with _quiet():
            _step(
                "pre-processing (quant_pre_process: shape inference and optimization)",
                src,
                lambda: quantization.shape_inference.quant_pre_process(str(src), str(prepared)),
            )
            excluded = _first_weighted(onnx, prepared) if keep_first else []
            if rows is None:
                _step(
                    "dynamic quantization (quantize_dynamic)",
                    src,
                    lambda: quantization.quantize_dynamic(
                        str(prepared),
                        str(written),
                        op_types_to_quantize=_dynamic_op_types(quantization),
                        per_channel=per_channel,
                        weight_type=quantization.QuantType.QInt8,
                        nodes_to_exclude=excluded,
                    ),
                )
            else:
                _step(
                    "static quantization with calibration (quantize_static)",
                    src,
                    lambda: quantization.quantize_static(
                        str(prepared),
                        str(written),
                        _rows_reader(quantization, rows),
                        quant_format=getattr(
                            quantization.QuantFormat, "QDQ" if fmt == "qdq" else "QOperator"
                        ),
                        per_channel=per_channel,
                        activation_type=quantization.QuantType.QUInt8,
                        weight_type=quantization.QuantType.QInt8,
                        calibrate_method=_calibration_method(quantization, method),
                        nodes_to_exclude=excluded,
                    ),
                )
        shutil.move(written, dst)
    return dst


_WEIGHTED = ("Conv", "Gemm", "MatMul", "LSTM", "GRU")


def _first_weighted(onnx: Any, path: Path) -> list[str]:
    """The name of the first node (in the graph's topological order) that holds weights, as a list."""
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in _WEIGHTED:
            return [node.name]
    return []


def nodes_quantized(path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the ONNX graph at ``path`` holds, subgraphs included, by op type.

    The integer ops show what was quantized: ``MatMulInteger`` / ``DynamicQuantizeLSTM`` (dynamic),
    ``QLinearConv`` / ``QGemm`` (static QOperator), ``QuantizeLinear`` / ``DequantizeLinear`` (static QDQ);
    ``ConvInteger`` would be a dynamically quantized convolution.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"'{path}' is not a file. Expected an ONNX model.")
    onnx, _ = _import_quantization()
    counts: Counter[str] = Counter()
    graphs = [onnx.load(str(path), load_external_data=False).graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            counts[node.op_type] += 1
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
    return dict(sorted(counts.items()))


def _check_choice(name: str, value: object, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise SpecError(f"quantize_onnx: {name}={value!r} is not one of {list(allowed)}. Pick one of those.")


def _import_quantization() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime.quantization as quantization
        import onnxruntime.quantization.registry
        import onnxruntime.quantization.shape_inference  # noqa: F401  (quant_pre_process)
    except ImportError as error:
        raise MissingExtraError("Int8 quantization of ONNX models", "onnx") from error
    return onnx, quantization


def _input_shape(onnx: Any, path: Path) -> tuple[int | None, ...]:
    """The per-sample shape of the graph's input ``input`` (its first axis, the batch, dropped); ``None``
    for an axis of symbolic size."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # protobuf's DecodeError, among others
        raise SpecError(
            f"'{path}' is not an ONNX model onnx can read ({type(error).__name__}: {error}). Expected a file "
            "written by an ONNX exporter (tunelab's export writes model.onnx)."
        ) from error
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = {value.name: value for value in graph.input if value.name not in initializers}
    if list(inputs) != ["input"]:
        raise SpecError(
            f"the ONNX model '{path}' has inputs {list(inputs)}; expected one float32 input named 'input', "
            "as tunelab's export writes. Export it with input_names=['input']."
        )
    dims = inputs["input"].type.tensor_type.shape.dim
    return tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in dims[1:])


def _calibration_rows(calibration: np.ndarray | None, sample_shape: tuple[int | None, ...]) -> np.ndarray:
    shown = "[N, " + ", ".join("?" if size is None else str(size) for size in sample_shape) + "]"
    if calibration is None:
        raise SpecError(
            f"static quantization needs calibration rows: a float32 array {shown} of training inputs (a few "
            "hundred rows), from which activation ranges are set. Pass calibration=X_train[:512], or use "
            "mode='dynamic'."
        )
    rows = np.asarray(calibration)
    fits = rows.ndim == len(sample_shape) + 1 and all(
        expected is None or given == expected
        for given, expected in zip(rows.shape[1:], sample_shape, strict=True)
    )
    if not fits or len(rows) == 0 or not np.issubdtype(rows.dtype, np.number):
        raise SpecError(
            f"calibration rows must be a non-empty numeric array {shown} (the model's input, batch first); "
            f"got {rows.dtype} {list(rows.shape)}. Pass rows of the data the model was trained on."
        )
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise DataError(
            "calibration rows hold NaN or infinite values; activation ranges cannot be set from them. "
            "Pass preprocessed training rows (as the model receives them)."
        )
    return rows


def _dynamic_op_types(quantization: Any) -> list[str]:
    accepted = set(quantization.registry.IntegerOpsRegistry) | {"Gemm"}  # Gemm: decomposed into MatMul
    return [op for op in DYNAMIC_OP_TYPES if op in accepted]


def _calibration_method(quantization: Any, method: CalibrationName) -> Any:
    names = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
    return getattr(quantization.CalibrationMethod, names[method])


def _rows_reader(quantization: Any, rows: np.ndarray) -> Any:
    """A ``CalibrationDataReader`` that gives ``rows`` as ``{"input": batch}``, batches of 32 rows."""

    class RowsReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(rows):
                return None
            # Every batch has the same size, the last one ending at the last row (overlapping its
            # predecessor): the histogram calibrators stack all batches' outputs into one array.
            end = min(self.start + CALIBRATION_BATCH, len(rows))
            self.start += CALIBRATION_BATCH
            return {"input": rows[max(end - CALIBRATION_BATCH, 0) : end]}

        def __len__(self) -> int:
            return math.ceil(len(rows) / CALIBRATION_BATCH)

        def rewind(self) -> None:
            self.start = 0

    return RowsReader()


def _step(what: str, src: Path, call: Any) -> None:
    try:
        call()
    except Exception as error:
        raise SpecError(
            f"onnxruntime's {what} failed on '{src}' ({type(error).__name__}: {error}). Expected a float32 "
            "ONNX graph as tunelab exports it; try the other mode (dynamic / static) or format (qdq / "
            "qoperator), or keep the float model."
        ) from error


class _DropChatter(logging.Filter):
    """Drops records below ERROR that onnxruntime's own files issue."""

    def __init__(self, package: str) -> None:
        super().__init__()
        self.package = package

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(self.package)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences onnxruntime's advice and notices (its ``logging.warning`` calls: "Please consider to run
    pre-processing", "Axis 1 is out-of-range" for rank-1 weights, ...), Python warnings from its modules and
    what it prints, for the duration only."""
    import onnxruntime

    root = logging.getLogger()
    own = logging.getLogger("onnxruntime")
    chatter = _DropChatter(str(Path(onnxruntime.__file__).parent))
    # logging.warning() on a root logger without handlers would configure one (basicConfig) for good
    placeholder = logging.NullHandler() if not root.handlers else None
    level = own.level
    if placeholder is not None:
        root.addHandler(placeholder)
    root.addFilter(chatter)
    own.setLevel(logging.ERROR)
    try:
        # and its progress notices printed to stdout ("Collecting tensor data and making histogram ...")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", module=r"onnxruntime(\.|$)")
            yield
    finally:
        own.setLevel(level)
        root.removeFilter(chatter)
        if placeholder is not None:
            root.removeHandler(placeholder)
