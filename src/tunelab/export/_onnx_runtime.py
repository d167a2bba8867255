"""Running an export's ONNX graph with onnxruntime (optional extra ``onnx``), as a torch module.

The graph follows tunelab's ONNX contract: one float32 input named ``input`` ``[batch, *input_shape]`` and an
output named ``output`` ``[batch, output_dim]``, the batch axis dynamic. :class:`OnnxModule` wraps a session
as an ``nn.Module`` so that :class:`ExportedModel` runs it exactly as it runs TorchScript, on the CPU
(onnxruntime's CPUExecutionProvider): an int8 graph made by onnxruntime's quantization tools is loaded and
predicts like any other export. onnxruntime is imported only here, when a graph is run.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.errors import DataError, MissingExtraError, SpecError
from tunelab.export._text import brief

__all__ = ["GraphError", "OnnxModule", "checked_threads", "import_onnxruntime", "open_session", "run_session"]

INPUT_NAME = "input"
OUTPUT_NAME = "output"
_FLOAT = "tensor(float)"


class GraphError(ValueError):
    """An ONNX graph cannot be opened or run, or breaks the contract; the message says why.

    Internal: loading turns it into a :class:`DataError` (the export is damaged), exporting into a
    :class:`SpecError` (the caller's file is wrong).
    """


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module; :class:`MissingExtraError` naming the ``onnx`` extra without it."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("running an ONNX export", "onnx") from None
    return onnxruntime


def checked_threads(threads: Any) -> int | None:
    """``threads`` as given, when it is ``None`` or an int >= 1; else a :class:`SpecError`."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SpecError(
            f"threads must be None (onnxruntime's default) or an int >= 1, the session's intra-op threads; "
            f"got {threads!r}"
        )
    return threads


def open_session(model: Path | bytes, *, threads: int | None = None) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU for ``model`` (a file, or a graph's bytes).

    ``threads`` is the session's intra-op thread count (``None``: onnxruntime's default, one per physical
    core); inter-op parallelism is off (one thread), since tunelab's graphs are a chain of operations.
    Raises :class:`MissingExtraError` without onnxruntime, :class:`GraphError` when the graph cannot be
    opened or does not have tunelab's float32 ``input`` and ``output``.
    """
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 0 if threads is None else threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    source = str(model) if isinstance(model, Path) else model
    try:
        session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception classes derive from Exception only
        raise GraphError(f"onnxruntime cannot open it as an ONNX graph ({brief(error)})") from error
    inputs = {node.name: node.type for node in session.get_inputs()}
    outputs = {node.name for node in session.get_outputs()}
    if inputs != {INPUT_NAME: _FLOAT} or OUTPUT_NAME not in outputs:
        given = ", ".join(f"{name} ({kind})" for name, kind in inputs.items()) or "none"
        raise GraphError(
            f"the graph's inputs are {given} and its outputs {sorted(outputs)}; tunelab runs graphs with one "
            f"float32 input named '{INPUT_NAME}' and an output named '{OUTPUT_NAME}' (torch.onnx.export(..., "
            f"input_names=['{INPUT_NAME}'], output_names=['{OUTPUT_NAME}']), as export_model writes them)"
        )
    return session


def run_session(session: Any, x: np.ndarray) -> np.ndarray:
    """The graph's ``output`` for the batch ``x`` (cast to float32), as a float32 array; raises
    :class:`GraphError` when onnxruntime fails on it."""
    try:
        (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    except Exception as error:
        raise GraphError(
            f"running the graph on a batch of shape {list(x.shape)} failed ({brief(error)})"
        ) from error
    return np.asarray(output, dtype=np.float32)


class OnnxModule(nn.Module):
    """An ONNX graph run by onnxruntime on the CPU, as a torch module: ``forward(x)`` float32
    ``[N, *input_shape]`` → float32 ``[N, output_dim]``, on the CPU, without gradients.

    Attributes: ``path`` (the ``.onnx`` file), ``session`` (the onnxruntime ``InferenceSession``, for callers
    that time or inspect the graph: ``session.run(["output"], {"input": array})``), ``threads`` (intra-op
    threads; ``None`` is onnxruntime's default). The module has no parameters and cannot be pickled or
    copied (a session cannot); open the file again instead.
    """

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = checked_threads(threads)
        try:
            self.session = open_session(self.path, threads=self.threads)
        except GraphError as error:
            raise DataError(f"{self.path} is damaged or not a tunelab ONNX graph: {error}") from error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise SpecError(f"an ONNX export runs on the CPU; got a batch on '{x.device}'. Move it: x.cpu()")
        try:
            output = run_session(self.session, x.detach().numpy())
        except GraphError as error:
            raise DataError(f"{self.path}: {error}") from error
        return torch.from_numpy(output)

    def extra_repr(self) -> str:
        return f"path='{self.path}', threads={self.threads}"
