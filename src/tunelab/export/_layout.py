"""What an export directory holds, and how to find one inside a run directory.

Two kinds of export share the layout, told apart by ``runtime`` in ``metadata.json``: ``"torch"`` (format
version 1: ``model.pt``, ``model.ts`` and optionally ``model.onnx``, from ``export_model``) and
``"onnxruntime"`` (format version 2: ``model.onnx`` alone, e.g. an int8 quantized graph, from
``export_onnx_model``). Version 2 marks the exports an older tunelab cannot load, so it asks to be upgraded.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import DataError
from tunelab.layout import RunLayout

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "LAYOUT",
    "METADATA",
    "ONNX",
    "PREPROCESSOR",
    "PREPROCESSOR_ARRAYS",
    "TORCHSCRIPT",
    "WEIGHTS",
    "find_export",
    "is_export",
]

FORMAT = "tunelab-export"
FORMAT_VERSIONS = {"torch": 1, "onnxruntime": 2}  # the version each runtime's exports are written in
FORMAT_VERSION = max(FORMAT_VERSIONS.values())  # the newest this tunelab reads

METADATA = "metadata.json"
WEIGHTS = "model.pt"
TORCHSCRIPT = "model.ts"
ONNX = "model.onnx"
PREPROCESSOR = "preprocessor.json"
PREPROCESSOR_ARRAYS = "preprocessor.npz"


LAYOUT = (
    f"A tunelab export is a directory with {METADATA} (written last: its presence marks a complete export), "
    f"{WEIGHTS} (the state_dict), {TORCHSCRIPT} (TorchScript, when the model could be compiled), "
    f"{PREPROCESSOR} + {PREPROCESSOR_ARRAYS} (the fitted preprocessing), and optionally {ONNX}; an export "
    f"of an ONNX graph alone (such as an int8 quantized model) has {ONNX} instead of {WEIGHTS} and "
    f"{TORCHSCRIPT}. `tunelab.export.export_model` (or `export_onnx_model`) writes one; `tunelab tune` "
    "writes one to RUN_DIR/best/."
)


def is_export(directory: Path) -> bool:
    """Whether ``directory`` holds a metadata file that names the tunelab export format."""
    try:
        metadata = json.loads((directory / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT


def find_export(run_dir: str | Path) -> Path:
    """The export directory of a run: ``run_dir`` itself when it is an export, else ``run_dir/best``.

    Raises :class:`DataError` when ``run_dir`` is missing, not a directory, or holds no export (the message
    names the exports found one level down, if any).
    """
    directory = Path(run_dir)
    if not directory.exists():
        raise DataError(
            f"'{directory}' does not exist. Expected a tunelab run directory (e.g. runs/NAME, whose best/ "
            f"holds the exported model) or an export directory. {LAYOUT}"
        )
    if not directory.is_dir():
        hint = (
            f" It looks like a file of an export: pass its directory '{directory.parent}'."
            if directory.name in (METADATA, WEIGHTS, TORCHSCRIPT, ONNX, PREPROCESSOR)
            else ""
        )
        raise DataError(f"'{directory}' is a file, not a directory.{hint} {LAYOUT}")
    run = RunLayout(directory)
    for candidate in (directory, run.export):
        if is_export(candidate):
            return candidate
    if (directory / METADATA).exists():
        # A metadata file that is not ours or not readable: let load() say exactly what is wrong with it.
        return directory
    found = sorted(child.name for child in directory.iterdir() if child.is_dir() and is_export(child))
    if found:
        names = ", ".join(f"'{directory / name}'" for name in found)
        raise DataError(f"'{directory}' is not an export, but these subdirectories are: {names}. Pass one.")
    present = [name for name in (WEIGHTS, TORCHSCRIPT, ONNX, PREPROCESSOR) if (directory / name).exists()]
    if present:
        raise DataError(
            f"'{directory}' looks like an incomplete export: it has {', '.join(present)} but no {METADATA}, "
            "which is written last, so the export was interrupted or files were removed. Export the model "
            f"again. {LAYOUT}"
        )
    best = run.export.name
    if run.is_run():
        raise DataError(
            f"'{directory}' is a tunelab run but holds no exported model: neither it nor "
            f"'{run.export}' has {METADATA}. Export one with tunelab.export.export_model, or run "
            f"`tunelab tune`, which exports its best model to RUN_DIR/{best}/. {LAYOUT}"
        )
    raise DataError(
        f"'{directory}' is neither a tunelab run nor an export: it has no {METADATA} and no {best}/ "
        f"subdirectory. {LAYOUT}"
    )
