"""``load``: an export directory back into an :class:`ExportedModel`, without unpickling any object.

What is read, and how: JSON (``json``), arrays (``np.load(allow_pickle=False)``), TorchScript
(``torch.jit.load``, a C++ archive reader) and weights (``torch.load(weights_only=True)``, which accepts
tensors and plain containers only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tunelab.data import Preprocessor
from tunelab.errors import DataError, SpecError, TunelabError
from tunelab.export._layout import (
    FORMAT,
    FORMAT_VERSION,
    LAYOUT,
    METADATA,
    PREPROCESSOR_ARRAYS,
    find_export,
)
from tunelab.export._model import Backend, ExportedModel
from tunelab.export._script import load_torchscript
from tunelab.export._state import read_state
from tunelab.export._text import brief
from tunelab.models import build_model, parse_model_spec

__all__ = ["load"]

BACKENDS = ("auto", "torchscript", "weights")


class _Files(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: str
    torchscript: str | None
    onnx: str | None
    preprocessor: str | None


class _Metadata(BaseModel):
    """The fields of ``metadata.json`` that loading relies on; the user's own entries sit beside them."""

    model_config = ConfigDict(extra="allow")

    format: Literal["tunelab-export"]
    format_version: int = Field(ge=1)
    task: Literal["classification", "regression", "forecasting"]
    kind: Literal["table", "image", "sequence"]
    input_shape: list[int] = Field(min_length=1)
    output_dim: int = Field(ge=1)
    class_names: list[str] | None
    input_columns: list[str]
    model_spec: dict[str, Any] | None
    files: _Files
    notices: list[str]


def load(
    path: str | Path,
    *,
    backend: Literal["auto", "torchscript", "weights"] = "auto",
    device: str | torch.device = "cpu",
) -> ExportedModel:
    """Load the export at ``path``: an export directory, or a run directory whose ``best/`` holds one.

    ``backend="auto"`` runs the TorchScript file when the export has one (no Python class needed, so a user's
    own module loads anywhere), else rebuilds the model from its spec and ``model.pt``; ``"torchscript"``
    or ``"weights"`` insist on one. Raises :class:`DataError` saying what is missing or damaged.
    """
    if backend not in BACKENDS:
        raise SpecError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    target = _checked_device(device)
    directory = find_export(path)
    metadata = _read_metadata(directory)
    files = metadata.files
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
    used: Backend
    if backend == "weights" or (backend == "auto" and files.torchscript is None):
        module, used = _rebuild(directory, metadata, target), "weights"
    else:
        module, used = _torchscript(directory, metadata, target), "torchscript"
    return ExportedModel(
        module,
        metadata=metadata.model_dump(),
        preprocessor=preprocessor,
        backend=used,
        path=directory,
        device=target,
    )


def _checked_device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise SpecError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0'): {error}") from None
    try:
        torch.empty(0, device=target)
    except (RuntimeError, AssertionError) as error:  # torch asserts when it was built without CUDA
        raise SpecError(
            f"device '{target}' is not available here ({brief(error)}); load with device='cpu'"
        ) from None
    return target


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


def _rebuild(directory: Path, metadata: _Metadata, device: torch.device) -> nn.Module:
    if metadata.model_spec is None:
        raise DataError(
            f"the export '{directory}' holds a user's module without a model spec, so only its TorchScript "
            "file can load it; load it with backend='auto' or 'torchscript'."
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
    model = build_model(spec, input_shape=tuple(metadata.input_shape), output_dim=metadata.output_dim, seed=0)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise DataError(
            f"the weights in {path} do not fit the model its spec describes ({brief(error)}); "
            "export the model again"
        ) from None
    return model.to(device).eval()
