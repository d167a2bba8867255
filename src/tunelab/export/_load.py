"""``load``: an export directory back into an :class:`ExportedModel`, without unpickling any object.

What is read, and how: JSON (``json``), arrays (``np.load(allow_pickle=False)``), TorchScript
(``torch.jit.load``, a C++ archive reader), weights (``torch.load(weights_only=True)``, which accepts
tensors and plain containers only) and ONNX graphs (onnxruntime, a protobuf reader; extra ``onnx``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from tunelab.data import Preprocessor
from tunelab.errors import DataError, SpecError, TunelabError
from tunelab.export._layout import (
    FORMAT,
    FORMAT_VERSION,
    LAYOUT,
    METADATA,
    ONNX,
    PREPROCESSOR_ARRAYS,
    TORCHSCRIPT,
    WEIGHTS,
    find_export,
)
from tunelab.export._model import Backend, ExportedModel
from tunelab.export._onnx_runtime import OnnxModule, checked_threads, import_onnxruntime
from tunelab.export._script import load_torchscript
from tunelab.export._state import read_state
from tunelab.export._text import brief
from tunelab.inputs import TextInput
from tunelab.models import build_model, parse_model_spec

__all__ = ["load"]

BACKENDS = ("auto", "torchscript", "weights", "onnx")


class _Files(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: str | None
    torchscript: str | None
    onnx: str | None
    preprocessor: str | None


class _Metadata(BaseModel):
    """The fields of ``metadata.json`` that loading relies on; the user's own entries sit beside them."""

    model_config = ConfigDict(extra="allow")

    format: Literal["tunelab-export"]
    format_version: int = Field(ge=1)
    task: Literal["classification", "regression", "forecasting"]
    kind: Literal["table", "image", "sequence", "text"]
    input_shape: list[int] = Field(min_length=1)
    output_dim: int = Field(ge=1)
    class_names: list[str] | None
    input_columns: list[str]
    model_spec: dict[str, Any] | None
    files: _Files
    notices: list[str]
    runtime: Literal["torch", "onnxruntime"] = "torch"  # absent from exports written before it existed

    @model_validator(mode="after")
    def _runnable(self) -> _Metadata:
        if self.runtime == "onnxruntime" and self.files.onnx is None:
            raise ValueError('"runtime": "onnxruntime" needs an ONNX file, but files.onnx is null')
        if self.runtime == "torch" and self.files.weights is None and self.files.torchscript is None:
            raise ValueError('"runtime": "torch" needs files.weights or files.torchscript; both are null')
        return self


def load(
    path: str | Path,
    *,
    backend: Literal["auto", "torchscript", "weights", "onnx"] = "auto",
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> ExportedModel:
    """Load the export at ``path``: an export directory, or a run directory whose ``best/`` holds one.

    ``backend="auto"`` runs ``model.onnx`` with onnxruntime when the export's ``runtime`` is
    ``"onnxruntime"`` (a graph alone, such as an int8 quantized model); otherwise the TorchScript file when
    the export has one (no Python class needed, so a user's own module loads anywhere), else it rebuilds the
    model from its spec and ``model.pt``. ``"torchscript"``, ``"weights"`` or ``"onnx"`` insist on one;
    ``"onnx"`` runs any export's ``model.onnx`` (extra ``onnx``) on the CPU only, with ``threads`` intra-op
    threads (``None``: onnxruntime's default; ``threads`` is for onnxruntime only, torch's thread count is
    the process's ``torch.set_num_threads``). Raises :class:`DataError` saying what is missing or damaged,
    :class:`SpecError` for a bad option, :class:`MissingExtraError` for ONNX without onnxruntime.
    """
    if backend not in BACKENDS:
        raise SpecError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    target = _parsed_device(device)
    threads = checked_threads(threads)
    directory = find_export(path)
    metadata = _read_metadata(directory)
    files = metadata.files
    used = _chosen_backend(backend, directory, metadata)
    if used == "onnx":
        if target.type != "cpu":
            raise SpecError(
                f"an ONNX export runs on the CPU (onnxruntime's CPUExecutionProvider); got device "
                f"'{target}'. Load it with device='cpu'."
            )
        import_onnxruntime()  # the missing extra before any file is read
    else:
        _check_available(target)
        if threads is not None:
            raise SpecError(
                f"threads sets onnxruntime's session threads, but this export runs on torch (backend "
                f"'{used}'), whose thread count is the process's: call torch.set_num_threads({threads}) "
                "instead, or load with backend='onnx' when the export has a model.onnx."
            )
    preprocessor = None
    if files.preprocessor is not None:
        state = read_state(_existing(directory, files.preprocessor), directory / PREPROCESSOR_ARRAYS)
        try:
            preprocessor = Preprocessor.from_state(state)
        except TunelabError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(
                f"{directory / files.preprocessor} does not hold a valid preprocessor state "
                f"({type(error).__name__}: {error}); export the model again"
            ) from error
    module: nn.Module
    if used == "onnx":
        module = _onnx(directory, metadata, threads)
    elif used == "weights":
        module = _rebuild(
            directory, metadata, target, None if preprocessor is None else preprocessor.text_input
        )
    else:
        module = _torchscript(directory, metadata, target)
    return ExportedModel(
        module,
        metadata=metadata.model_dump(),
        preprocessor=preprocessor,
        backend=used,
        path=directory,
        device=target,
    )


def _chosen_backend(backend: str, directory: Path, metadata: _Metadata) -> Backend:
    """The backend that runs the model: ``backend`` itself, or the one ``"auto"`` picks for this export."""
    files = metadata.files
    if backend == "auto":
        if metadata.runtime == "onnxruntime":
            return "onnx"
        return "torchscript" if files.torchscript is not None else "weights"
    if backend == "onnx" and files.onnx is None:
        raise DataError(
            f"the export '{directory}' has no {ONNX}, so it cannot run with backend='onnx'. Load it with "
            f"backend='auto', or export the model again with an ONNX graph: export_model(..., onnx=True) "
            "(needs the extra: pip install 'tunelab[onnx]')."
        )
    if backend in ("torchscript", "weights") and metadata.runtime == "onnxruntime":
        raise DataError(
            f"the export '{directory}' holds its model only as an ONNX graph ({ONNX}; runtime "
            f"onnxruntime, e.g. an int8 quantized model), without {WEIGHTS} or {TORCHSCRIPT}, so it cannot "
            f"run with backend='{backend}'. Load it with backend='auto' or 'onnx'."
        )
    if backend == "onnx":
        return "onnx"
    return "weights" if backend == "weights" else "torchscript"


def _parsed_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise SpecError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0'): {error}") from None


def _check_available(target: torch.device) -> None:
    try:
        torch.empty(0, device=target)
    except (RuntimeError, AssertionError) as error:  # torch asserts when it was built without CUDA
        raise SpecError(
            f"device '{target}' is not available here ({brief(error)}); load with device='cpu'"
        ) from None


def _read_metadata(directory: Path) -> _Metadata:
    path = directory / METADATA
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as JSON ({error}). {LAYOUT}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DataError(f'{path} is not the metadata of a tunelab export (no "format": "{FORMAT}"). {LAYOUT}')
    version = document.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DataError(
            f"{directory} was exported in format version {version}, newer than this tunelab reads "
            f"({FORMAT_VERSION}). Upgrade tunelab: pip install -U tunelab"
        )
    try:
        return _Metadata.model_validate(document)
    except pydantic.ValidationError as error:
        raise DataError(f"{path} is malformed: {error}. Export the model again.") from None


def _existing(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise DataError(f"the export '{directory}' lacks {name}, which its {METADATA} lists. {LAYOUT}")
    return path


def _torchscript(directory: Path, metadata: _Metadata, device: torch.device) -> nn.Module:
    name = metadata.files.torchscript
    if name is None:
        why = "; ".join(metadata.notices) or "it was exported without one"
        raise DataError(
            f"the export '{directory}' has no TorchScript file ({why}). Load it with backend='weights'."
        )
    path = _existing(directory, name)
    try:
        return load_torchscript(path, device=device)
    except Exception as error:
        fallback = ""
        if metadata.model_spec is not None:
            fallback = " or load it with backend='weights' (rebuilds it from model.pt)"
        raise DataError(
            f"{path} is damaged or not a TorchScript archive ({type(error).__name__}: {brief(error)}). "
            f"Export the model again{fallback}."
        ) from error


def _rebuild(
    directory: Path, metadata: _Metadata, device: torch.device, text: TextInput | None = None
) -> nn.Module:
    if metadata.model_spec is None:
        raise DataError(
            f"the export '{directory}' holds a user's module without a model spec, so only its TorchScript "
            "file can load it; load it with backend='auto' or 'torchscript'."
        )
    if metadata.files.weights is None:
        raise DataError(
            f"the export '{directory}' has no weights file ({WEIGHTS}), so it cannot be rebuilt with "
            "backend='weights'; load it with backend='auto'."
        )
    path = _existing(directory, metadata.files.weights)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise DataError(
            f"cannot read {path} as saved weights ({type(error).__name__}: {brief(error)}). "
            "The file is damaged or not a state_dict; export the model again."
        ) from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise DataError(f"{path} does not hold a state_dict of tensors; export the model again")
    try:
        spec = parse_model_spec(metadata.model_spec)
    except pydantic.ValidationError as error:
        raise DataError(f"the model spec in {directory / METADATA} is invalid: {error}") from None
    model = build_model(
        spec, input_shape=tuple(metadata.input_shape), output_dim=metadata.output_dim, seed=0, text=text
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise DataError(
            f"the weights in {path} do not fit the model its spec describes ({brief(error)}); "
            "export the model again"
        ) from None
    return model.to(device).eval()


def _onnx(directory: Path, metadata: _Metadata, threads: int | None) -> nn.Module:
    name = metadata.files.onnx
    if name is None:  # _chosen_backend refused it already
        raise DataError(f"the export '{directory}' has no {ONNX}; load it with backend='auto'")
    path = _existing(directory, name)
    try:
        return OnnxModule(path, threads=threads)
    except DataError as error:
        again = (
            "Export the model again"
            if metadata.runtime == "onnxruntime"
            else "Export the model again, or load it with backend='auto' (TorchScript or the weights)"
        )
        raise DataError(f"{error}. {again}.") from error
