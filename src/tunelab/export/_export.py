"""``export_model``: write a trained model, its preprocessing and its description to a directory.

``export_onnx_model`` writes the same for a model that exists only as an ONNX graph (an int8 quantized copy
of an export's ``model.onnx``, say): the graph, the preprocessing, and metadata whose ``runtime`` is
``"onnxruntime"``, so that :func:`tunelab.export.load` runs it with onnxruntime.
"""

from __future__ import annotations

import copy
import json
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pydantic
import torch
from torch import nn

from tunelab.data import Preprocessor
from tunelab.errors import MissingExtraError, SpecError
from tunelab.export._layout import (
    FORMAT,
    FORMAT_VERSIONS,
    METADATA,
    ONNX,
    PREPROCESSOR,
    PREPROCESSOR_ARRAYS,
    TORCHSCRIPT,
    WEIGHTS,
)
from tunelab.export._onnx import ONNX_OPSET, export_onnx, graph_opset, onnx_available
from tunelab.export._onnx_runtime import GraphError, import_onnxruntime, open_session, run_session
from tunelab.export._script import compile_torchscript, quiet_torchscript
from tunelab.export._state import write_state
from tunelab.export._text import brief
from tunelab.inputs import TextInput
from tunelab.models import AnyModelSpec, build_model, parse_model_spec
from tunelab.train import Task

__all__ = ["RESERVED_METADATA", "export_model", "export_onnx_model", "kind_of"]

TASKS: tuple[str, ...] = get_args(Task)
RESERVED_METADATA = frozenset(
    {
        "format",
        "format_version",
        "created",
        "versions",
        "task",
        "kind",
        "input_shape",
        "output_dim",
        "n_classes",
        "class_names",
        "input_columns",
        "model_spec",
        "model_class",
        "files",
        "torchscript",
        "onnx_opset",
        "notices",
        "runtime",
    }
)
_KINDS = {1: "table", 2: "sequence", 3: "image"}


def export_model(
    path: str | Path,
    *,
    model: nn.Module,
    preprocessor: Preprocessor | None,
    model_spec: AnyModelSpec | Mapping[str, Any] | None,
    task: Task,
    input_shape: tuple[int, ...],
    output_dim: int,
    metadata: Mapping[str, Any] | None = None,
    example_input: torch.Tensor | None = None,
    onnx: bool | None = None,
) -> Path:
    """Write ``model`` and what it needs to predict to the directory ``path``; returns the directory.

    Files: ``model.pt`` (the state_dict, tensors only), ``model.ts`` (TorchScript), ``model.onnx`` (with
    ``onnx=True``, or ``onnx=None`` when the ``onnx`` package is installed), ``preprocessor.json`` +
    ``preprocessor.npz`` (the fitted ``Preprocessor``; omit it with ``None`` for models that take
    ready-made tensors), and ``metadata.json``, written last, with ``metadata``'s entries (metrics, best
    parameters: JSON values) added at its top level.

    ``model_spec`` is the spec the model was built from (``None`` for a user's own module): with it,
    :func:`load` can rebuild the model from the weights (an ``EnsembleSpec`` for a ``models.Ensemble``, whose
    members' weights are all in ``model.pt``). ``example_input`` ``[N, *input_shape]`` is the batch
    TorchScript traces (default: two seeded standard-normal samples); pass real rows when the model's
    forward depends on input values. A model TorchScript cannot compile is exported without ``model.ts``
    (a notice in the metadata says why) when it has a spec, and is a :class:`SpecError` when it has none,
    since nothing could load it. The model itself is left as it was (modes, device, weights).
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"model must be a torch.nn.Module; got a {type(model).__name__}")
    shape = _checked_target(preprocessor, task=task, input_shape=input_shape, output_dim=output_dim)
    spec = _checked_spec(model_spec)
    extra = _checked_metadata(metadata)
    if onnx not in (True, False, None):
        raise SpecError(
            f"onnx must be True, False or None (export when the onnx package is installed); got {onnx!r}"
        )
    if onnx is True and not onnx_available():  # before any work, and before any file is touched
        raise MissingExtraError("ONNX export", "onnx")

    # Work on an eval-mode CPU copy: the caller's model keeps its mode and device, and TorchScript traced
    # on the CPU loads on any machine.
    cpu_model = copy.deepcopy(model).cpu().eval()
    example = _example(example_input, shape)
    with torch.no_grad():
        reference = _checked_output(cpu_model, example, output_dim)
    if spec is not None:
        text = None if preprocessor is None else preprocessor.text_input
        _check_rebuild(
            spec, cpu_model, example, reference, input_shape=shape, output_dim=output_dim, text=text
        )

    state = {name: tensor.detach() for name, tensor in _tensor_state(cpu_model).items()}
    notices: list[str] = []
    script, how = compile_torchscript(cpu_model, example)
    if script is None:
        if spec is None:
            raise SpecError(
                f"the model cannot be compiled to TorchScript: {how}. A model without a model_spec is "
                "loaded from TorchScript alone, so it cannot be exported. Fix: make its forward traceable "
                "(tensor operations, no Python values that depend on the input), or pass a model_spec "
                "(e.g. a CustomSpec naming its factory) so that load() can rebuild it from the weights."
            )
        notices.append(f"no {TORCHSCRIPT}: {how}; load() rebuilds the model from {WEIGHTS} and the spec")

    directory = _prepared_directory(Path(path))
    torch.save(state, directory / WEIGHTS)
    if script is not None:
        with quiet_torchscript():
            torch.jit.save(script, str(directory / TORCHSCRIPT))
    if onnx is True or (onnx is None and onnx_available()):
        try:
            export_onnx(cpu_model, example, directory / ONNX)
        except SpecError as error:
            if onnx:
                raise
            notices.append(f"no {ONNX}: {error}")
    if preprocessor is not None:
        write_state(preprocessor.to_state(), directory / PREPROCESSOR, directory / PREPROCESSOR_ARRAYS)
    has_onnx = (directory / ONNX).exists()
    description = _description(
        preprocessor,
        spec,
        task=task,
        input_shape=shape,
        output_dim=output_dim,
        runtime="torch",
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        files={
            "weights": WEIGHTS,
            "torchscript": TORCHSCRIPT if script is not None else None,
            "onnx": ONNX if has_onnx else None,
        },
        torchscript=how if script is not None else None,
        onnx_opset=ONNX_OPSET if has_onnx else None,
        notices=notices,
    )
    # Written last: its presence marks a complete export.
    (directory / METADATA).write_text(json.dumps({**description, **extra}, indent=2), encoding="utf-8")
    return directory


def export_onnx_model(
    path: str | Path,
    *,
    onnx_file: str | Path,
    preprocessor: Preprocessor | None,
    model_spec: AnyModelSpec | Mapping[str, Any] | None,
    task: Task,
    input_shape: tuple[int, ...],
    output_dim: int,
    metadata: Mapping[str, Any] | None = None,
    example_input: torch.Tensor | None = None,
) -> Path:
    """Write an export whose model is the ONNX graph ``onnx_file``; returns the directory ``path``.

    Files: ``model.onnx`` (a copy of ``onnx_file``), ``preprocessor.json`` + ``preprocessor.npz`` (omit
    them with ``None``), and ``metadata.json``, written last, with ``"runtime": "onnxruntime"``, no weights
    and no TorchScript, and ``metadata``'s entries at its top level. :func:`load` runs such an export with
    onnxruntime on the CPU (``backend="auto"`` or ``"onnx"``); it cannot be rebuilt in torch.

    The graph follows tunelab's ONNX contract: one float32 input ``input`` ``[batch, *input_shape]`` and an
    output ``output`` ``[batch, output_dim]`` (raw outputs: logits, or standardized values that the
    preprocessor maps back to the target's units), the batch axis dynamic, self-contained (no external data
    files). ``model_spec`` is informational (the structure the graph came from; ``None`` if unknown). Before
    anything is written the graph is run on ``example_input`` ``[N, *input_shape]`` (default: two seeded
    standard-normal samples) and on its first sample; outputs of another shape, or not finite, are a
    :class:`SpecError`, and the directory is left as it was. Needs the ``onnx`` extra (onnxruntime).
    """
    shape = _checked_target(preprocessor, task=task, input_shape=input_shape, output_dim=output_dim)
    spec = _checked_spec(model_spec)
    extra = _checked_metadata(metadata)
    source = Path(onnx_file)
    if not source.is_file():
        raise SpecError(f"onnx_file '{source}' is not a file. Pass the path of the .onnx graph to export.")
    example = _example(example_input, shape).float()
    onnxruntime = import_onnxruntime()  # before any work: MissingExtraError names the extra
    # The graph is read once: the bytes checked are the bytes written (onnx_file may even be this export's
    # own model.onnx, which preparing the directory removes).
    graph = source.read_bytes()
    try:
        session = open_session(graph)
        for batch in (example, example[:1]):
            output = run_session(session, batch.numpy())
            expected = [len(batch), output_dim]
            if list(output.shape) != expected:
                raise GraphError(
                    f"it returns {list(output.shape)} for a batch of {len(batch)}; expected {expected} "
                    "(output_dim, with a dynamic batch axis)"
                )
            if not np.isfinite(output).all():
                raise GraphError(f"it returns values that are not finite for a batch of {len(batch)}")
    except GraphError as error:
        raise SpecError(
            f"onnx_file '{source}' cannot be exported: {error}. Check input_shape and output_dim, or pass an "
            "example_input of real rows."
        ) from error

    directory = _prepared_directory(Path(path))
    (directory / ONNX).write_bytes(graph)
    if preprocessor is not None:
        write_state(preprocessor.to_state(), directory / PREPROCESSOR, directory / PREPROCESSOR_ARRAYS)
    description = _description(
        preprocessor,
        spec,
        task=task,
        input_shape=shape,
        output_dim=output_dim,
        runtime="onnxruntime",
        model_class=None,
        files={"weights": None, "torchscript": None, "onnx": ONNX},
        torchscript=None,
        onnx_opset=graph_opset(graph),
        notices=[],
        onnxruntime_version=str(onnxruntime.__version__),
    )
    # Written last: its presence marks a complete export.
    (directory / METADATA).write_text(json.dumps({**description, **extra}, indent=2), encoding="utf-8")
    return directory


def _description(
    preprocessor: Preprocessor | None,
    spec: AnyModelSpec | None,
    *,
    task: str,
    input_shape: tuple[int, ...],
    output_dim: int,
    runtime: str,
    model_class: str | None,
    files: dict[str, str | None],
    torchscript: str | None,
    onnx_opset: int | None,
    notices: list[str],
    onnxruntime_version: str | None = None,
) -> dict[str, Any]:
    """The contents of metadata.json that tunelab writes (the caller's entries are added beside them)."""
    versions = _versions()
    if onnxruntime_version is not None:
        versions["onnxruntime"] = onnxruntime_version
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSIONS[runtime],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "runtime": runtime,  # what runs the model: torch (model.ts / model.pt) or onnxruntime (model.onnx)
        "task": task,
        "kind": preprocessor.kind if preprocessor is not None else kind_of(input_shape),
        "input_shape": list(input_shape),
        "output_dim": output_dim,
        "n_classes": _n_classes(task, preprocessor, output_dim),
        "class_names": preprocessor.class_names if preprocessor is not None else None,
        "input_columns": preprocessor.input_columns if preprocessor is not None else [],
        "model_spec": spec.model_dump(mode="json") if spec is not None else None,
        "model_class": model_class,
        "files": {**files, "preprocessor": PREPROCESSOR if preprocessor is not None else None},
        "torchscript": torchscript,  # how it was compiled: "trace" or "script"
        "onnx_opset": onnx_opset,
        "notices": notices,
    }


def kind_of(input_shape: tuple[int, ...]) -> str:
    """The data kind a sample shape implies: (F,) table, (L, F) sequence, (C, H, W) image."""
    return _KINDS.get(len(input_shape), "table")


# ---------------------------------------------------------------------- checks


def _checked_target(
    preprocessor: Preprocessor | None, *, task: Any, input_shape: Any, output_dim: Any
) -> tuple[int, ...]:
    """The task, the sample shape (returned as a tuple) and the output size, and the preprocessor's fit."""
    if task not in TASKS:
        raise SpecError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    shape = _checked_shape(input_shape)
    if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
        raise SpecError(f"output_dim must be an int >= 1; got {output_dim!r}")
    _check_preprocessor(preprocessor, task=task, input_shape=shape, output_dim=output_dim)
    return shape


def _checked_shape(input_shape: Any) -> tuple[int, ...]:
    dims = tuple(input_shape) if isinstance(input_shape, tuple | list | torch.Size) else ()
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise SpecError(
            "input_shape must be one sample's shape without the batch dimension, a non-empty tuple of "
            f"positive ints (table (F,), image (C, H, W), sequence (L, F)); got {input_shape!r}"
        )
    return dims


def _check_preprocessor(
    preprocessor: Preprocessor | None, *, task: str, input_shape: tuple[int, ...], output_dim: int
) -> None:
    if preprocessor is None:
        return
    if not isinstance(preprocessor, Preprocessor):
        raise SpecError(
            f"preprocessor must be a tunelab.data.Preprocessor (DataBundle.preprocessor) or None; "
            f"got a {type(preprocessor).__name__}"
        )
    problems = []
    if preprocessor.task != task:
        problems.append(f"task {preprocessor.task!r} (given {task!r})")
    if tuple(preprocessor.input_shape) != input_shape:
        problems.append(f"input_shape {tuple(preprocessor.input_shape)} (given {input_shape})")
    # A binary classifier may have one logit (binary cross-entropy) for the preprocessor's two classes.
    one_logit = task == "classification" and output_dim == 1 and preprocessor.output_dim == 2
    if preprocessor.output_dim != output_dim and not one_logit:
        problems.append(f"output_dim {preprocessor.output_dim} (given {output_dim})")
    if problems:
        raise SpecError(
            f"the preprocessor was fitted for {'; '.join(problems)}. Pass the DataBundle's preprocessor, "
            "task, input_shape and output_dim of the data the model was trained on."
        )


def _checked_spec(model_spec: AnyModelSpec | Mapping[str, Any] | None) -> AnyModelSpec | None:
    if model_spec is None:
        return None
    if isinstance(model_spec, pydantic.BaseModel):  # a spec object: validated again, whatever its family
        model_spec = model_spec.model_dump()
    if not isinstance(model_spec, Mapping):
        raise SpecError(
            "model_spec must be a ModelSpec or an EnsembleSpec, a mapping that validates as one, or None; "
            f"got a {type(model_spec).__name__}"
        )
    try:
        return parse_model_spec(model_spec)
    except pydantic.ValidationError as error:
        raise SpecError(f"model_spec is not a valid model spec: {error}") from None


def _checked_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise SpecError(f"metadata must be a mapping of JSON values; got a {type(metadata).__name__}")
    clashes = sorted(RESERVED_METADATA & set(metadata))
    if clashes:
        raise SpecError(
            f"metadata must not set {clashes}: export_model writes those keys itself. Rename them "
            "(e.g. 'run_notes' instead of 'notices')."
        )
    for key, value in metadata.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise SpecError(
                f"metadata['{key}'] is not a JSON value ({error}). Convert it, e.g. float(x) for a tensor or "
                "numpy number, x.tolist() for an array."
            ) from None
    return dict(metadata)


def _example(example_input: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    if example_input is None:
        return torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    if not isinstance(example_input, torch.Tensor) or tuple(example_input.shape[1:]) != shape:
        given = list(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input)
        raise SpecError(
            f"example_input must be a tensor [N, {', '.join(map(str, shape))}] (a batch of model inputs); "
            f"got {given}"
        )
    if len(example_input) == 0:
        raise SpecError("example_input must hold at least one sample")
    return example_input.detach().cpu()


def _checked_output(model: nn.Module, example: torch.Tensor, output_dim: int) -> torch.Tensor:
    try:
        output = model(example)
    except Exception as error:
        raise SpecError(
            f"the model fails on the example batch of shape {list(example.shape)} "
            f"({type(error).__name__}: {error}). Check input_shape, or pass an example_input it accepts."
        ) from error
    expected = [len(example), output_dim]
    if not isinstance(output, torch.Tensor) or list(output.shape) != expected:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise SpecError(f"the model returns {got} for the example batch; expected {expected} (output_dim)")
    return output


def _check_rebuild(
    spec: AnyModelSpec,
    model: nn.Module,
    example: torch.Tensor,
    reference: torch.Tensor,
    *,
    input_shape: tuple[int, ...],
    output_dim: int,
    text: TextInput | None = None,
) -> None:
    """The spec must rebuild this very model: load() relies on it when there is no TorchScript."""
    rebuilt = build_model(spec, input_shape=input_shape, output_dim=output_dim, seed=0, text=text).eval()
    try:
        rebuilt.load_state_dict(_tensor_state(model))
    except RuntimeError as error:
        raise SpecError(
            f"model_spec does not describe the model: its weights do not fit a model built from the spec "
            f"({brief(error)}). Pass the spec the model was built from."
        ) from None
    with torch.no_grad():
        same = torch.allclose(rebuilt(example), reference, rtol=1e-5, atol=1e-6)
    if not same:
        raise SpecError(
            "model_spec does not describe the model: a model built from the spec with the same weights "
            "computes other outputs. Pass the spec the model was built from."
        )


def _tensor_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    others = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise SpecError(
            f"the model's state_dict holds non-tensor entries {others[:5]} (extra state); an export stores "
            "tensors only, so it can be loaded without unpickling objects"
        )
    return state


def _n_classes(task: str, preprocessor: Preprocessor | None, output_dim: int) -> int | None:
    if task != "classification":
        return None
    return preprocessor.output_dim if preprocessor is not None else max(2, output_dim)


def _prepared_directory(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise SpecError(f"cannot export to '{directory}': it is a file. Choose a directory path.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SpecError(f"cannot create the export directory '{directory}': {error}") from None
    # Remove the marker first, so an interrupted re-export is never taken for a complete one, and the
    # files of an earlier export, so they cannot be mistaken for this model's.
    for name in (METADATA, WEIGHTS, TORCHSCRIPT, ONNX, PREPROCESSOR, PREPROCESSOR_ARRAYS):
        (directory / name).unlink(missing_ok=True)
    return directory


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tunelab_version = version("tunelab")
    except PackageNotFoundError:
        tunelab_version = "unknown"
    return {
        "tunelab": tunelab_version,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
