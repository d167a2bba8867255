"""ONNX export (optional extra ``onnx``): opset 17, a dynamic batch axis, input ``input``, output ``output``.

PyTorch's TorchScript-based exporter (``dynamo=False``) is used: it targets opset 17 directly, needs only the
``onnx`` package (the ``torch.export``-based default also needs ``onnxscript``), and follows the same graph as
the TorchScript file beside it. Its deprecation notice is silenced here, where tunelab made the choice.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import MissingExtraError, SpecError

__all__ = ["ONNX_OPSET", "export_onnx", "graph_opset", "onnx_available"]

ONNX_OPSET = 17


def onnx_available() -> bool:
    """Whether the ``onnx`` package (the exporter's only requirement) can be imported."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def graph_opset(graph: bytes) -> int | None:
    """The standard-domain opset an ONNX graph (its serialized bytes) imports; ``None`` when the ``onnx``
    package is missing or the bytes are not a graph."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load_from_string(graph)
    except Exception:  # protobuf's DecodeError, among others
        return None
    versions = [int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    return versions[0] if versions else None


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write ``model`` (eval mode, on the CPU) to ``path`` as ONNX; inputs ``[batch, *example.shape[1:]]``.

    Raises :class:`MissingExtraError` without the ``onnx`` package, :class:`SpecError` when the model has an
    operation ONNX cannot express.
    """
    if not onnx_available():
        raise MissingExtraError("ONNX export", "onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # Issued for every recurrent layer; it applies to initial states fixed at export time, while the
            # default zero state follows the input's batch size in the graph (the tests check other sizes).
            warnings.filterwarnings(
                "ignore", message="Exporting a model to ONNX with a batch_size other than 1"
            )
            torch.onnx.export(
                model,
                # One sample: the exporter's advice for recurrent layers, whose initial state it would
                # otherwise size by the example's batch; the batch axis is dynamic either way.
                (example[:1],),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
    except Exception as error:
        path.unlink(missing_ok=True)
        raise SpecError(
            f"the model cannot be exported to ONNX opset {ONNX_OPSET} ({type(error).__name__}: {error}). "
            "Export without it (onnx=False); the TorchScript file serves most deployment tools."
        ) from error
