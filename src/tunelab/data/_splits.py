"""Row splits: test part first, then validation from the rest, with scikit-learn's splitters.

Every function returns row positions, never data, so the same logic serves tables, images and windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

from tunelab.data._spec import DataSpec, SplitSpec
from tunelab.errors import DataError, SpecError

__all__ = ["SplitIndices", "n_splits", "split_indices", "subsample_indices"]

_MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class SplitIndices:
    """Sorted row positions of each part within the dataset's main part.

    ``test`` is empty when the dataset brings its own test part (which then is all of that part).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def n_splits(spec: DataSpec | SplitSpec) -> int:
    """How many validation folds ``fold`` can pick from: 1 for holdout, else ``n_folds``."""
    split = spec.split if isinstance(spec, DataSpec) else spec
    return 1 if split.method == "holdout" else split.n_folds


def split_indices(
    n_rows: int,
    split: SplitSpec,
    *,
    seed: int,
    fold: int | None = None,
    labels: np.ndarray | None = None,
    chronological: bool = False,
    has_test_part: bool = False,
    gap: int = 0,
) -> SplitIndices:
    """Split ``n_rows`` rows into train / validation / test positions.

    ``labels`` (class labels ``[n_rows]``) make holdout parts stratified and enable ``stratified_kfold``.
    ``chronological`` (implied by ``method='timeseries'``) keeps time order: the test part is the last rows
    and validation always comes after training. ``gap`` rows are dropped between train and later parts so that
    overlapping forecast windows cannot leak targets. ``fold=None`` gives one validation part of
    ``val_fraction``; ``fold=i`` the i-th of :func:`n_splits` folds. The test part depends on ``seed`` only,
    so every fold of one seed shares it.
    """
    if not 0 <= seed <= _MAX_SEED:
        raise SpecError(f"seed must be between 0 and {_MAX_SEED}, got {seed}")
    chronological = chronological or split.method == "timeseries"
    if fold is not None and not 0 <= fold < n_splits(split):
        raise SpecError(
            f"fold {fold} does not exist: split.method '{split.method}' has {n_splits(split)} fold(s), "
            f"numbered 0 to {n_splits(split) - 1}; pass fold=None for a single validation part"
        )
    if split.method == "stratified_kfold" and labels is None:
        raise SpecError(
            "split.method 'stratified_kfold' needs class labels, but the task is not classification; "
            "use method 'kfold'"
        )
    rows = np.arange(n_rows)
    if has_test_part:
        rest, test = rows, rows[:0]
    else:
        rest, test = _holdout(rows, split.test_fraction, split, seed, labels, chronological, gap, part="test")
    if fold is None or split.method == "holdout":
        train, val = _holdout(
            rest, split.val_fraction, split, seed, labels, chronological, gap, part="validation"
        )
    else:
        train, val = _fold(rest, fold, split, seed, labels, chronological, gap)
    return SplitIndices(train=np.sort(train), val=np.sort(val), test=np.sort(test))


def _holdout(
    rows: np.ndarray,
    fraction: float,
    split: SplitSpec,
    seed: int,
    labels: np.ndarray | None,
    chronological: bool,
    gap: int,
    *,
    part: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)``: the last ``fraction`` of rows in order, or a (stratified) random share."""
    ordered = chronological or split.shuffle is False
    stratify = None if ordered or labels is None else labels[rows]
    if stratify is not None:
        _require_class_counts(stratify, 2, f"a stratified {part} part")
    try:
        kept, held_out = train_test_split(
            rows,
            test_size=fraction,
            shuffle=not ordered,
            stratify=stratify,
            random_state=None if ordered else seed,
        )
    except ValueError as error:
        raise DataError(
            f"cannot set aside a {part} part of {fraction:.0%} from {len(rows)} rows: {error}. "
            f"Fix: use more rows (max_rows) or change split.{'test' if part == 'test' else 'val'}_fraction."
        ) from error
    if gap:
        kept = kept[: max(len(kept) - gap, 0)]
    if len(kept) == 0:
        raise DataError(
            f"no training rows are left after setting aside the {part} part ({len(rows)} rows, gap {gap}). "
            "Fix: provide more rows or a shorter horizon."
        )
    return np.asarray(kept), np.asarray(held_out)


def _fold(
    rows: np.ndarray,
    fold: int,
    split: SplitSpec,
    seed: int,
    labels: np.ndarray | None,
    chronological: bool,
    gap: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` rows of fold ``fold`` of the method's k-fold splitter over ``rows``."""
    shuffle = split.shuffle is not False  # None: the method's default, shuffled
    shuffle_seed = seed if shuffle else None
    if chronological:
        splitter: TimeSeriesSplit | KFold | StratifiedKFold = TimeSeriesSplit(n_splits=split.n_folds, gap=gap)
    elif split.method == "stratified_kfold" and labels is not None:
        _require_class_counts(
            labels[rows], split.n_folds, f"stratified {split.n_folds}-fold cross-validation"
        )
        splitter = StratifiedKFold(n_splits=split.n_folds, shuffle=shuffle, random_state=shuffle_seed)
    else:
        splitter = KFold(n_splits=split.n_folds, shuffle=shuffle, random_state=shuffle_seed)
    strata = labels[rows] if labels is not None else None
    try:
        train, val = next(part for index, part in enumerate(splitter.split(rows, strata)) if index == fold)
    except ValueError as error:
        raise DataError(
            f"cannot make {split.n_folds} '{split.method}' folds from {len(rows)} non-test rows: {error}. "
            "Fix: lower split.n_folds or provide more rows."
        ) from error
    return rows[train], rows[val]


def _require_class_counts(labels: np.ndarray, minimum: int, purpose: str) -> None:
    classes, counts = np.unique(labels, return_counts=True)
    rare = [(cls, int(count)) for cls, count in zip(classes, counts, strict=True) if count < minimum]
    if rare:
        shown = ", ".join(f"{cls!r} ({count} row{'s' if count != 1 else ''})" for cls, count in rare[:5])
        raise DataError(
            f"{purpose} needs at least {minimum} rows of every class, but these classes have fewer: {shown}. "
            "Fix: remove or merge the rare classes, add rows, lower split.n_folds, or use an unstratified "
            "split (method: kfold, or shuffle: false)."
        )


def subsample_indices(
    n_rows: int, max_rows: int, *, labels: np.ndarray | None = None, chronological: bool = False
) -> tuple[np.ndarray, bool]:
    """Sorted positions of at most ``max_rows`` rows, the same on every call; and whether it is stratified.

    Time-ordered data keeps its first ``max_rows`` rows; labelled data keeps its class proportions when every
    class can be represented; other data takes a seeded random subset.
    """
    rows = np.arange(n_rows)
    if n_rows <= max_rows:
        return rows, False
    if chronological:
        return rows[:max_rows], False
    stratify = None
    if labels is not None:
        counts = np.unique(labels, return_counts=True)[1]
        if counts.min() >= 2 and len(counts) <= min(max_rows, n_rows - max_rows):
            stratify = labels
    kept, _ = train_test_split(rows, train_size=max_rows, stratify=stratify, random_state=0)
    return np.sort(kept), stratify is not None
