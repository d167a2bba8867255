"""A preprocessor's state on disk as JSON + npz: readable, exact, and loadable without pickle.

``Preprocessor.to_state()`` holds plain values and numpy arrays. Numeric arrays go to the npz file (exact
dtype and bits) and leave a ``{"__array__": key}`` reference in the JSON; text or object arrays become JSON
lists, because npz stores them only by pickling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import DataError, SpecError

__all__ = ["read_state", "write_state"]

_REFERENCE = "__array__"


def write_state(state: dict[str, Any], json_path: Path, npz_path: Path) -> None:
    """Write ``state`` to ``json_path``, its numeric arrays to ``npz_path`` (always written, maybe empty)."""
    arrays: dict[str, np.ndarray] = {}
    document = _encode(state, arrays, path="state")
    json_path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    with npz_path.open("wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)


def read_state(json_path: Path, npz_path: Path) -> dict[str, Any]:
    """The state ``write_state`` wrote; ``DataError`` naming the file when one is missing or unreadable."""
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"the export lacks {json_path.name} (its preprocessing); export the model again"
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {json_path} as JSON ({error}); export the model again") from error
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DataError(
            f"the export lacks {npz_path.name} (its preprocessing arrays); export the model again"
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {npz_path} as an npz archive ({error}); export it again") from error
    decoded = _decode(document, arrays, source=json_path.name)
    if not isinstance(decoded, dict):
        raise DataError(f"{json_path} holds a {type(decoded).__name__}, not a preprocessor state object")
    return decoded


def _encode(value: Any, arrays: dict[str, np.ndarray], *, path: str) -> Any:
    if isinstance(value, dict):
        return {str(key): _encode(item, arrays, path=f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item, arrays, path=f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {_REFERENCE: key}
        return _encode(value.tolist(), arrays, path=path)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise SpecError(
        f"the preprocessor state holds a {type(value).__name__} at {path}; an export stores only plain "
        "values (str, int, float, bool, None, lists, dicts) and numpy arrays"
    )


def _decode(value: Any, arrays: dict[str, np.ndarray], *, source: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {_REFERENCE}:
            key = value[_REFERENCE]
            if key not in arrays:
                raise DataError(f"{source} refers to array '{key}', which the npz file lacks; export again")
            return arrays[key]
        return {key: _decode(item, arrays, source=source) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, arrays, source=source) for item in value]
    return value
