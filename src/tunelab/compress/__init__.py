"""Compression: a tuned run's winner made smaller and faster, searched for the best accuracy / latency / size.

>>> from tunelab.compress import compress_run
>>> result = compress_run("runs/fmnist", CompressSpec(budget="10m", max_drop=1.0))  # doctest: +SKIP
>>> result.pick  # runs/fmnist/compressed: an export like best/  # doctest: +SKIP

Candidates combine structured slimming (every hidden layer narrowed, the kept units' weights copied,
gate-aware for LSTM / GRU), magnitude sparsity, distillation from the teacher's outputs while fine-tuning, and
int8 quantization of the exported ONNX graph with onnxruntime (dynamic for MatMul / Gemm / LSTM / GRU, static
with calibration for convolutions too). One multi-objective study (validation score, latency on the runtime
the model is exported for, deflated size) searches them; a candidate the current front already beats on
latency and size is stopped before it trains. The pick is the fastest (or smallest) front model within
``max_drop`` of the winner that is nowhere slower than the fp32 original; the test part is scored once, for
it. Measurements (``tunelab.compress`` ``measure``-module functions) are medians of >= 30 timed runs per batch
size, with the thread count and the CPU's int8 instructions recorded.
"""

from tunelab.compress._compress import (
    COMPRESSED,
    COMPRESSION,
    COMPRESSION_JSON,
    CompressionResult,
    compress_run,
)
from tunelab.compress._measure import (
    Latency,
    count_macs,
    deflated_bytes,
    file_bytes,
    int8_capability,
    time_onnx,
    time_torch,
)
from tunelab.compress._quantize import nodes_quantized, quantize_onnx
from tunelab.compress._slim import slim_model, slim_spec
from tunelab.compress._sparsity import GradualSparsity, apply_masks, magnitude_masks, sparsity_of

__all__ = [
    "COMPRESSED",
    "COMPRESSION",
    "COMPRESSION_JSON",
    "CompressionResult",
    "GradualSparsity",
    "Latency",
    "apply_masks",
    "compress_run",
    "count_macs",
    "deflated_bytes",
    "file_bytes",
    "int8_capability",
    "magnitude_masks",
    "nodes_quantized",
    "quantize_onnx",
    "slim_model",
    "slim_spec",
    "sparsity_of",
    "time_onnx",
    "time_torch",
]
