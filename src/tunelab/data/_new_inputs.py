"""New inputs to predict on, read as the model's kind of data was read for training: a table (CSV or
Parquet), arrays (``.npz``), IDX images, one image file, a folder of images (its sub-folders too), and for
text models also a ``.txt`` file (one text per line) or a folder of ``.txt`` files (one text per file)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tunelab.data._idx import read_idx
from tunelab.data._images import IMAGE_SUFFIXES, read_images
from tunelab.errors import DataError

__all__ = ["NewInputs", "read_new_inputs"]

_TABLE_SUFFIXES = {".csv": "CSV", ".txt": "CSV", ".tsv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}


@dataclass(frozen=True)
class NewInputs:
    """The inputs as ``ExportedModel.predict`` takes them (a DataFrame for tables and series, an array for
    images and sequences), and for image files their paths, one per input."""

    data: pd.DataFrame | np.ndarray
    paths: list[str] | None = None


def read_new_inputs(
    path: str | Path,
    *,
    kind: str,
    input_shape: tuple[int, ...],
    x_key: str = "X",
    columns: list[str] | None = None,
) -> NewInputs:
    """Read ``path`` for a model of ``kind`` (table, image, sequence) whose samples have ``input_shape``.

    Tables (series too): a CSV or Parquet file (or an ``.npz`` of a 2-D array). Images: a folder of image
    files (searched recursively, in path order; class sub-folders are fine, their names are ignored), one
    image file, an ``.npz`` or an IDX file; image files are read as the model's channels (1: grayscale,
    3: RGB) and resized to its height and width. Sequences: an ``.npz``. An ``.npz`` holds the array
    ``x_key`` (the training data's), or a single array. Text: a CSV or Parquet table with the model's input
    ``columns``; when it reads one text column alone, also a ``.txt`` file (UTF-8, one text per non-empty
    line) or a folder of ``.txt`` files (one text per file, in path order).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"'{path}' does not exist. {_expected(kind)}")
    suffix = path.suffix.lower()
    if kind == "text" and (path.is_dir() or suffix == ".txt"):
        return _text_files(path, columns or [])
    if path.is_dir():
        if kind != "image":
            raise DataError(f"'{path}' is a folder. {_expected(kind)}")
        return _image_folder(path, input_shape)
    if suffix == ".npz":
        return NewInputs(_npz_array(path, x_key))
    if kind in ("table", "text") and suffix in _TABLE_SUFFIXES:
        return NewInputs(_table(path, _TABLE_SUFFIXES[suffix]))
    if kind == "image" and suffix in IMAGE_SUFFIXES:
        return NewInputs(
            read_images([path], image_size=input_shape[1:], channels=input_shape[0]), [path.name]
        )
    if kind == "image" and "idx" in path.name.lower():
        return NewInputs(read_idx(path))
    raise DataError(f"cannot read '{path}' for this model. {_expected(kind)}")


def _expected(kind: str) -> str:
    expected = {
        "table": "Expected a CSV or Parquet file of new rows (a series' rows) with the training columns.",
        "image": (
            "Expected a folder of image files (png, jpg...), one image file, an .npz of an [N, C, H, W] "
            "array, or an IDX images file."
        ),
        "sequence": "Expected an .npz holding an [N, L, F] array of sequences.",
        "text": (
            "Expected a CSV or Parquet table with the model's text (and other) columns, or for a model of "
            "one text column a .txt file (one text per line) or a folder of .txt files (one text per file)."
        ),
    }
    return expected.get(kind, f"This model's data kind is '{kind}', which predict does not read.")


def _files_under(folder: Path, suffixes: Collection[str]) -> list[Path]:
    """The files under ``folder`` (sub-folders too) whose suffix is one of ``suffixes``, none hidden, in path
    order."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _image_folder(folder: Path, input_shape: tuple[int, ...]) -> NewInputs:
    paths = _files_under(folder, IMAGE_SUFFIXES)
    if not paths:
        raise DataError(
            f"folder '{folder}' holds no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, in its "
            "sub-folders too). Fix: point to the folder of the images to predict."
        )
    images = read_images(paths, image_size=input_shape[1:], channels=input_shape[0])
    return NewInputs(images, [path.relative_to(folder).as_posix() for path in paths])


def _text_files(path: Path, columns: list[str]) -> NewInputs:
    if len(columns) != 1:
        raise DataError(
            f"this text model reads the columns {', '.join(columns) or '(none)'}, so '{path}' cannot give "
            "them. Fix: pass a CSV or Parquet table with those columns."
        )
    if path.is_dir():
        files = _files_under(path, {".txt"})
        if not files:
            raise DataError(
                f"folder '{path}' holds no .txt files (sub-folders searched too). {_expected('text')}"
            )
        texts = [_decoded(file, file.read_bytes()) for file in files]
        return NewInputs(
            pd.DataFrame({columns[0]: texts}), [file.relative_to(path).as_posix() for file in files]
        )
    lines = [line for line in _decoded(path, path.read_bytes()).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"'{path}' holds no text (every line is empty). {_expected('text')}")
    return NewInputs(pd.DataFrame({columns[0]: lines}))


def _decoded(path: Path, data: bytes) -> str:
    """UTF-8 text, a byte-order mark dropped (as the training folders read it)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"'{path}' is not UTF-8 text (byte {data[error.start : error.start + 1]!r} at offset "
            f"{error.start}). Expected UTF-8. Fix: save the file as UTF-8, or pass a CSV table instead."
        ) from None


def _npz_array(path: Path, x_key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            key = x_key if x_key in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(
                    f"{path.name} holds arrays {', '.join(keys)} but none is named '{x_key}', the training "
                    f"data's. Fix: save the inputs under '{x_key}' (numpy.savez(path, {x_key}=inputs))."
                )
            return archive[key]
    except (OSError, ValueError, EOFError) as error:
        raise DataError(
            f"cannot read {path} as .npz: {error}. Expected numpy.savez output of a plain numeric array."
        ) from error


def _table(path: Path, form: str) -> pd.DataFrame:
    try:
        if form == "Parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(
            f"cannot read '{path}' as a {form} table: {error}. Expected a table with the same feature "
            "columns the model was trained on."
        ) from None
