"""Export: save a trained model with its preprocessing; load it anywhere; predict on raw data.

>>> from tunelab.export import export_model, load
>>> export_model("runs/x/best", model=model, preprocessor=bundle.preprocessor, model_spec=spec.model,
...              task=bundle.task, input_shape=bundle.input_shape, output_dim=10)  # doctest: +SKIP
>>> load("runs/x").predict(frame)  # labels in the data's own values                  # doctest: +SKIP

An export directory holds ``metadata.json`` (written last), ``model.pt`` (state_dict), ``model.ts``
(TorchScript), ``preprocessor.json`` + ``preprocessor.npz``, and optionally ``model.onnx`` (extra ``onnx``).
``export_onnx_model`` writes an export whose model is an ONNX graph alone (e.g. int8 quantized by
onnxruntime, from a graph ``export_onnx`` wrote); ``load`` runs it with onnxruntime (``backend="onnx"``, which
runs any export's ``model.onnx``).
Loading never unpickles an object.
"""

from tunelab.export._export import export_model, export_onnx_model
from tunelab.export._layout import LAYOUT, find_export, is_export
from tunelab.export._load import load
from tunelab.export._model import ExportedModel
from tunelab.export._onnx import ONNX_OPSET, export_onnx
from tunelab.export._onnx_runtime import OnnxModule

__all__ = [
    "LAYOUT",
    "ONNX_OPSET",
    "ExportedModel",
    "OnnxModule",
    "export_model",
    "export_onnx",
    "export_onnx_model",
    "find_export",
    "is_export",
    "load",
]
