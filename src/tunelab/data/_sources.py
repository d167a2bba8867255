"""Reading a data source into a raw :class:`Dataset`: tables, npz arrays, IDX directories, image folders."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from tunelab.data._builtin import (
    BUILTIN_NAMES,
    FASHION_MNIST_CLASSES,
    fashion_mnist_dir,
    load_sklearn,
    unknown_builtin,
)
from tunelab.data._columns import clean_target, infer_task, select_features, take_target
from tunelab.data._dataset import DataKind, Dataset, Task, take_rows
from tunelab.data._hints import did_you_mean, listing
from tunelab.data._idx import find_idx_files, read_idx
from tunelab.data._images import list_image_folder, read_images
from tunelab.data._season import series_times
from tunelab.data._spec import DataSpec
from tunelab.data._splits import subsample_indices
from tunelab.data._text_sources import is_text_folder, read_fortunes, read_text_folder
from tunelab.errors import DataError, SpecError

__all__ = ["load_dataset", "resolve_format"]

_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
}
_TABLE_FORMATS = ("csv", "parquet")


def load_dataset(spec: DataSpec) -> Dataset:
    """Read ``spec.source`` into raw, unsplit data: its kind, task, features, targets and notices.

    >>> load_dataset(DataSpec(source="iris")).task
    'classification'
    """
    source_format = resolve_format(spec)
    _check_options(spec, source_format)
    if source_format in _TABLE_FORMATS:
        dataset = _read_table(spec, source_format)
    elif source_format == "npz":
        dataset = _read_npz(spec)
    elif source_format == "idx":
        dataset = _read_idx_directory(Path(spec.source), spec.task)
    elif source_format == "image_folder":
        dataset = _read_image_folder(spec)
    elif source_format == "text_folder":
        dataset = _read_text_folder(spec)
    elif spec.source == "fortunes":
        dataset = _read_fortunes(spec)
    elif spec.source == "fashion-mnist":
        dataset = _read_idx_directory(fashion_mnist_dir(), spec.task, label_names=FASHION_MNIST_CLASSES)
        dataset = replace(dataset, name="fashion-mnist")
    else:
        dataset = _read_builtin(spec)
    if spec.max_rows is not None:
        dataset = _subsample(dataset, spec.max_rows, chronological=_chronological(spec, dataset.task))
    return dataset


def resolve_format(spec: DataSpec) -> str:
    """The source's format: as given, or guessed from the built-in names, the path's suffix or contents."""
    path = Path(spec.source)
    if spec.format == "builtin" or (
        spec.format == "auto" and not path.exists() and spec.source in BUILTIN_NAMES
    ):
        if spec.source not in BUILTIN_NAMES:
            raise unknown_builtin(spec.source)
        return "builtin"
    if not path.exists():
        if spec.format == "auto" and not any(sep in spec.source for sep in "/\\."):
            raise unknown_builtin(spec.source)
        raise DataError(
            f"data file {spec.source} does not exist. Fix: check the path (relative paths start from "
            f"{Path.cwd()})."
        )
    if spec.format != "auto":
        return spec.format
    if path.is_dir():
        present = {entry.name for entry in path.iterdir()}
        if {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"} & present:
            return "idx"
        return "text_folder" if is_text_folder(path) else "image_folder"
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz") and len(suffixes) > 1:
        suffixes = suffixes[:-1]  # pandas reads compressed CSVs directly
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    raise DataError(
        f"cannot tell the format of {path} from its name. Expected a suffix among "
        f"{listing(_SUFFIX_FORMATS)}. Fix: set format: one of 'csv', 'parquet', 'npz', 'idx', 'image_folder'."
    )


def _check_options(spec: DataSpec, source_format: str) -> None:
    """Options that only make sense for some formats are an error elsewhere, not silently ignored."""
    table = source_format in _TABLE_FORMATS
    misplaced = [
        ("target", spec.target is not None and not table, "tables (CSV / Parquet)"),
        ("time_column", spec.time_column is not None and not table, "tables (CSV / Parquet)"),
        ("drop_columns", bool(spec.drop_columns) and not table, "tables (CSV / Parquet)"),
        ("text_columns", spec.text_columns is not None and not table, "tables (CSV / Parquet)"),
        ("task: forecasting", spec.task == "forecasting" and not table, "a series in a CSV / Parquet table"),
        ("kind", spec.kind != "auto" and source_format != "npz", ".npz arrays"),
        ("image_size", spec.image_size is not None and source_format != "image_folder", "image folders"),
    ]
    for option, wrong, applies_to in misplaced:
        if wrong:
            raise SpecError(
                f"`{option}` applies to {applies_to} only, but the source is {source_format}; remove it"
            )


def _chronological(spec: DataSpec, task: Task) -> bool:
    return task == "forecasting" or spec.split.method == "timeseries"


def _task(given: str, target: np.ndarray, name: str, notices: list[str]) -> Task:
    if given != "auto":
        return cast(Task, given)
    task, notice = infer_task(target, name=name)
    notices.append(notice)
    return task


# --- tables -------------------------------------------------------------------------------------------------


def _read_table(spec: DataSpec, source_format: str) -> Dataset:
    path = Path(spec.source)
    frame = _read_frame(path, source_format, spec.delimiter, spec.encoding)
    target = spec.target
    if target is None:
        raise SpecError(
            f"a table source needs `target`: the column of {path.name} to predict, one of "
            f"{listing(frame.columns)}"
        )
    frame = take_target(frame, target, spec.drop_columns, source=path.name)
    notices: list[str] = []
    if spec.time_column is not None:
        frame = _sort_by_time(frame, spec.time_column, path.name, notices)
    missing = frame[target].isna()
    if missing.all():
        raise DataError(f"target column '{target}' in {path.name} has no values. Fix: choose another target.")
    if missing.any():
        notices.append(f"{int(missing.sum())} row(s) without a '{target}' value were dropped")
        frame = frame.loc[~missing]
    frame = frame.reset_index(drop=True)
    task = _task(spec.task, frame[target].to_numpy(), target, notices)
    values = clean_target(frame[target], task, name=target)
    forecasting = task == "forecasting"
    features, text_columns, column_notices = select_features(
        frame.drop(columns=[target]),
        forecasting=forecasting,
        time_column=spec.time_column,
        text_columns=spec.text_columns,
    )
    notices += column_notices
    if forecasting:
        # Past values of the series are the first input feature of every window.
        features.insert(0, target, values.astype(np.float64))
        times = series_times(frame, spec.time_column)
        return Dataset(
            path.name, "sequence", task, features, values, target_name=target, notices=notices, times=times
        )
    if text_columns:
        return Dataset(
            path.name,
            "text",
            task,
            features,
            values,
            target_name=target,
            notices=notices,
            text_columns=tuple(text_columns),
        )
    return Dataset(path.name, "table", task, features, values, target_name=target, notices=notices)


def _read_frame(path: Path, source_format: str, delimiter: str, encoding: str = "utf-8") -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            f"{path} is a directory, but format '{source_format}' needs a file. Fix: point at the file."
        )
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes). Fix: check that it was written completely.")
    try:
        frame = (
            pd.read_csv(path, sep=delimiter, low_memory=False, encoding=encoding)
            if source_format == "csv"
            else pd.read_parquet(path)
        )
    except pd.errors.EmptyDataError as error:
        raise DataError(f"data file {path} holds no columns. Fix: check its header line.") from error
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not valid {encoding} text: byte {error.object[error.start : error.start + 1]!r} at "
            f"offset {error.start} ({error.reason}). Expected {encoding}. Fix: set the data spec's "
            "`encoding` to the file's (e.g. encoding: latin-1 or cp1252), or save the file as UTF-8."
        ) from error
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise DataError(
            f"cannot read {path} as {source_format}: {error}. Fix: check the file's format (set `format`) "
            + ("and its field separator (`delimiter`)." if source_format == "csv" else "or export it again.")
        ) from error
    if frame.empty:
        raise DataError(
            f"data file {path} has a header but no rows. Fix: check that it was written completely."
        )
    frame.columns = [str(name) for name in frame.columns]
    if source_format == "csv" and len(frame.columns) == 1:
        separator = next((sep for sep in ";\t|," if sep != delimiter and sep in frame.columns[0]), None)
        if separator is not None:
            raise DataError(
                f"{path} reads as a single column '{frame.columns[0]}', which looks separated by "
                f"{separator!r}. Fix: set delimiter: {separator!r}."
            )
    return frame


def _sort_by_time(frame: pd.DataFrame, column: str, source: str, notices: list[str]) -> pd.DataFrame:
    if column not in frame.columns:
        columns = list(frame.columns)
        raise DataError(
            f"time_column '{column}' is not in {source}.{did_you_mean(column, columns)} "
            f"Available columns: {listing(columns)}."
        )
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        keys = raw
    else:
        try:
            keys = pd.to_datetime(raw, format="ISO8601")
        except (ValueError, TypeError) as error:
            raise DataError(
                f"time_column '{column}' holds values that are neither numbers nor ISO dates "
                f"(YYYY-MM-DD[ HH:MM:SS]): {error}. Fix: convert the column to ISO dates."
            ) from error
    if keys.isna().any():
        raise DataError(
            f"time_column '{column}' has {int(keys.isna().sum())} empty value(s); fill or drop those rows."
        )
    order = np.argsort(keys.to_numpy(), kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        notices.append(f"rows were sorted by '{column}'")
    return frame.iloc[order]


# --- arrays -------------------------------------------------------------------------------------------------


def _read_npz(spec: DataSpec) -> Dataset:
    path = Path(spec.source)
    wanted = (spec.x_key, spec.y_key, f"{spec.x_key}_test", f"{spec.y_key}_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            arrays = {key: archive[key] for key in keys if key in wanted}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(
            f"cannot read {path} as .npz: {error}. Expected numpy.savez output of plain numeric arrays "
            "(object arrays need pickle, which tunelab does not load)."
        ) from error
    absent = [key for key in wanted[:2] if key not in keys]
    if absent:
        hints = "".join(did_you_mean(key, keys) for key in absent)
        raise DataError(
            f"{path.name} has no array(s) {listing(absent)}.{hints} It holds {listing(keys)}. "
            "Fix: set x_key / y_key to the names of the features and targets."
        )
    features, target = arrays[spec.x_key], arrays[spec.y_key]
    test_keys = [key for key in (f"{spec.x_key}_test", f"{spec.y_key}_test") if key in arrays]
    if len(test_keys) == 1:
        raise DataError(
            f"{path.name} has '{test_keys[0]}' without its partner; add both test arrays or neither."
        )
    notices: list[str] = []
    kind = _array_kind(features, spec.kind, path.name, notices)
    task = _task(spec.task, _checked_target(target, features, path.name), spec.y_key, notices)
    parts = _array_part(features, target, kind, task, spec.y_key, path.name)
    test = None
    if test_keys:
        test = _array_part(arrays[test_keys[0]], arrays[test_keys[1]], kind, task, spec.y_key, path.name)
        notices.append(f"the test part is the file's own '{test_keys[0]}' / '{test_keys[1]}' arrays")
    if kind == "table":
        columns = [f"x{index}" for index in range(features.shape[1])]
        return Dataset(
            path.name, kind, task, pd.DataFrame(parts[0], columns=columns), parts[1], target_name=spec.y_key,
            test_features=None if test is None else pd.DataFrame(test[0], columns=columns),
            test_target=None if test is None else test[1], notices=notices,
        )  # fmt: skip
    return Dataset(
        path.name, kind, task, parts[0], parts[1], target_name=spec.y_key,
        test_features=None if test is None else test[0], test_target=None if test is None else test[1],
        notices=notices,
    )  # fmt: skip


def _array_kind(features: np.ndarray, requested: str, source: str, notices: list[str]) -> DataKind:
    shapes = {"table": (2,), "sequence": (3,), "image": (3, 4)}
    if requested != "auto":
        if features.ndim not in shapes[requested]:
            raise DataError(
                f"kind '{requested}' needs X with {' or '.join(map(str, shapes[requested]))} dimensions, "
                f"but {source} has X of shape {list(features.shape)}"
            )
        return cast(DataKind, requested)
    if features.ndim == 2:
        return "table"
    if features.ndim == 4:
        if features.shape[1] > 4 and features.shape[3] <= 4:
            raise DataError(
                f"X in {source} has shape {list(features.shape)}, which looks channels-last [N, H, W, C]; "
                "tunelab expects [N, C, H, W]. Fix: save X.transpose(0, 3, 1, 2)."
            )
        return "image"
    if features.ndim == 3:
        if features.dtype == np.uint8:
            notices.append(f"X of shape {list(features.shape)} and dtype uint8 read as grayscale images")
            return "image"
        notices.append(f"X of shape {list(features.shape)} read as sequences [N, steps, features]")
        return "sequence"
    raise DataError(
        f"X in {source} has {features.ndim} dimension(s); expected 2 (table), 3 (sequences [N, L, F] or "
        "grayscale images [N, H, W]) or 4 (images [N, C, H, W])."
    )


def _checked_target(target: np.ndarray, features: np.ndarray, source: str) -> np.ndarray:
    if target.ndim not in (1, 2) or len(target) != len(features):
        raise DataError(
            f"y in {source} has shape {list(target.shape)} but X has {len(features)} rows; expected y of "
            f"shape [{len(features)}] or [{len(features)}, T]"
        )
    if target.dtype.kind == "f" and np.isnan(target).any():
        raise DataError(f"y in {source} has missing (NaN) values. Fix: drop those rows before saving.")
    return target


def _array_part(
    features: np.ndarray, target: np.ndarray, kind: DataKind, task: Task, name: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    target = _checked_target(target, features, source)
    if kind == "image" and features.ndim == 3:
        features = features[:, None]
    if features.dtype.kind not in "biuf":
        raise DataError(f"X in {source} has dtype {features.dtype}; expected numbers.")
    if kind != "table" and features.dtype.kind == "f" and not np.isfinite(features).all():
        raise DataError(
            f"X in {source} has NaN or infinite values; clean them before saving ({kind}s are not imputed)."
        )
    if task == "classification":
        if target.ndim == 2 and target.shape[1] != 1:
            raise DataError(f"classification needs y of shape [N] but {source} has {list(target.shape)}")
        return features, clean_target(pd.Series(target.reshape(-1)), task, name=name)
    if target.ndim == 1:
        return features, clean_target(pd.Series(target), task, name=name)
    return features, target.astype(np.float64)


def _read_idx_directory(directory: Path, task: str, *, label_names: list[str] | None = None) -> Dataset:
    files = find_idx_files(directory)
    notices: list[str] = []
    parts = {}
    for split in ("train", "test"):
        if (split, "images") not in files:
            continue
        images, labels = read_idx(files[split, "images"]), read_idx(files[split, "labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"IDX {split} files in {directory} do not pair up: images {list(images.shape)}, labels "
                f"{list(labels.shape)}; expected images [N, H, W] and labels [N]."
            )
        parts[split] = (images[:, None], labels.astype(np.int64))
    images, labels = parts["train"]
    inferred = _task(task, labels, "label", [])  # class labels by construction: no notice needed
    test_images, test_labels = parts.get("test", (None, None))
    if test_images is not None:
        notices.append("the test part is the t10k files")
    return Dataset(
        directory.name, "image", inferred, images, labels, target_name="label",
        test_features=test_images, test_target=test_labels, label_names=label_names, notices=notices,
    )  # fmt: skip


def _read_image_folder(spec: DataSpec) -> Dataset:
    root = Path(spec.source)
    paths, labels, classes, notices = list_image_folder(root)
    if spec.max_rows is not None and len(paths) > spec.max_rows:
        keep, _ = subsample_indices(len(paths), spec.max_rows, labels=labels)
        notices.append(f"using {len(keep)} of {len(paths)} images (max_rows)")
        paths, labels = [paths[index] for index in keep], labels[keep]
    images = read_images(paths, image_size=spec.image_size)
    task = _task(spec.task, labels, "class", [])
    return Dataset(
        root.name, "image", task, images, labels, target_name="class", label_names=classes, notices=notices
    )


def _read_text_folder(spec: DataSpec) -> Dataset:
    root = Path(spec.source)
    frame, notices = read_text_folder(root, encoding=spec.encoding)
    return _text_dataset(root.name, frame["text"], frame["label"].to_numpy(), spec, notices, "label")


def _read_fortunes(spec: DataSpec) -> Dataset:
    frame = read_fortunes()
    notices = [f"fortunes: {len(frame)} quotations of {frame['topic'].nunique()} topics"]
    return _text_dataset("fortunes", frame["text"], frame["topic"].to_numpy(), spec, notices, "topic")


def _text_dataset(
    name: str, texts: pd.Series, labels: np.ndarray, spec: DataSpec, notices: list[str], target_name: str
) -> Dataset:
    """One free-text column ``text`` and its labels as a ``text`` dataset."""
    task = _task(spec.task, labels, target_name, notices)
    values = clean_target(pd.Series(labels, name=target_name), task, name=target_name)
    features = pd.DataFrame({"text": texts.to_numpy(dtype=object)})
    return Dataset(
        name, "text", task, features, values, target_name=target_name, notices=notices, text_columns=("text",)
    )


def _read_builtin(spec: DataSpec) -> Dataset:
    features, target, names = load_sklearn(spec.source)
    notices: list[str] = []
    task = _task(spec.task, target.to_numpy(), "target", [])
    values = clean_target(target, task, name="target")
    kind: DataKind = "table" if isinstance(features, pd.DataFrame) else "image"
    return Dataset(spec.source, kind, task, features, values, label_names=names, notices=notices)


def _subsample(dataset: Dataset, max_rows: int, *, chronological: bool) -> Dataset:
    """At most ``max_rows`` rows of the main part and of the test part, chosen deterministically."""
    notices = list(dataset.notices)

    def positions(target: np.ndarray, part: str) -> np.ndarray | None:
        if len(target) <= max_rows:
            return None
        labels = target if dataset.task == "classification" else None
        keep, stratified = subsample_indices(
            len(target), max_rows, labels=labels, chronological=chronological
        )
        how = "the first" if chronological else ("a stratified random" if stratified else "a random")
        notices.append(f"using {how} {len(keep)} of {len(target)} {part} (max_rows)")
        return keep

    features, target = dataset.features, dataset.target
    keep = positions(target, "rows")
    times = dataset.times
    if keep is not None:
        features, target = take_rows(features, keep), target[keep]
        times = None if times is None else times[keep]
    test_features, test_target = dataset.test_features, dataset.test_target
    if test_features is not None and test_target is not None:
        keep = positions(test_target, "test rows")
        if keep is not None:
            test_features, test_target = take_rows(test_features, keep), test_target[keep]
    return replace(
        dataset,
        features=features,
        target=target,
        test_features=test_features,
        test_target=test_target,
        notices=notices,
        times=times,
    )
