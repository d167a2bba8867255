"""Split properties: disjoint parts, full coverage, stratification, fold coverage, time order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.data import SplitSpec, n_splits, split_indices
from tunelab.data._splits import subsample_indices
from tunelab.errors import DataError, SpecError

fractions = st.floats(min_value=0.1, max_value=0.4)


def _parts(indices):
    return indices.train, indices.val, indices.test


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(30, 400),
    test_fraction=fractions,
    val_fraction=fractions,
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.booleans(),
)
def test_holdout_parts_are_disjoint_and_cover_every_row(n_rows, test_fraction, val_fraction, seed, shuffle):
    split = SplitSpec(test_fraction=test_fraction, val_fraction=val_fraction, shuffle=shuffle)
    indices = split_indices(n_rows, split, seed=seed)
    train, val, test = _parts(indices)
    joined = np.concatenate([train, val, test])
    assert len(joined) == n_rows
    assert np.array_equal(np.sort(joined), np.arange(n_rows))
    assert min(len(train), len(val), len(test)) > 0
    # scikit-learn's rounding: the held-out part is ceil(fraction * n).
    assert len(test) == int(np.ceil(test_fraction * n_rows))


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(10, 80), min_size=2, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_stratified_holdout_keeps_class_proportions(counts, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    indices = split_indices(len(labels), SplitSpec(), seed=seed, labels=labels)
    overall = np.bincount(labels) / len(labels)
    for part in _parts(indices):
        share = np.bincount(labels[part], minlength=len(counts)) / len(part)
        # Stratification is exact up to rounding one row per class.
        assert np.all(np.abs(share - overall) <= len(counts) / len(part) + 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    n_rows=st.integers(40, 300),
    n_folds=st.integers(2, 6),
    method=st.sampled_from(["kfold", "stratified_kfold"]),
    seed=st.integers(0, 10_000),
)
def test_kfold_validation_folds_cover_the_non_test_rows_exactly_once(n_rows, n_folds, method, seed):
    labels = np.arange(n_rows) % 3
    split = SplitSpec(method=method, n_folds=n_folds)
    folds = [
        split_indices(n_rows, split, seed=seed, fold=fold, labels=labels) for fold in range(n_splits(split))
    ]
    test = folds[0].test
    assert all(np.array_equal(fold.test, test) for fold in folds), "the test part must not depend on the fold"
    validation = np.concatenate([fold.val for fold in folds])
    non_test = np.setdiff1d(np.arange(n_rows), test)
    assert np.array_equal(np.sort(validation), non_test)  # each non-test row validates exactly once
    for fold in folds:
        assert np.intersect1d(fold.train, fold.val).size == 0
        assert np.array_equal(np.sort(np.concatenate([fold.train, fold.val])), non_test)


@settings(max_examples=40, deadline=None)
@given(
    n_rows=st.integers(40, 300),
    n_folds=st.integers(2, 5),
    gap=st.integers(0, 3),
    use_fold=st.booleans(),
)
def test_timeseries_never_trains_on_rows_after_validation_or_test(n_rows, n_folds, gap, use_fold):
    split = SplitSpec(method="timeseries", n_folds=n_folds)
    folds = range(n_folds) if use_fold else [None]
    for fold in folds:
        train, val, test = _parts(split_indices(n_rows, split, seed=0, fold=fold, gap=gap))
        assert train.max() + gap < val.min()
        assert val.max() < test.min()
        assert test.max() == n_rows - 1, "the test part is the last rows"
        assert np.array_equal(test, np.arange(test.min(), n_rows))


def test_chronological_holdout_leaves_a_gap_between_parts():
    train, val, test = _parts(split_indices(100, SplitSpec(), seed=0, chronological=True, gap=2))
    assert test.tolist() == list(range(80, 100))
    assert train.max() + 2 < val.min()
    assert val.max() + 2 < test.min()


def test_same_seed_gives_same_split_and_another_seed_another():
    split = SplitSpec(method="stratified_kfold", n_folds=3)
    labels = np.arange(90) % 2
    first = split_indices(90, split, seed=7, fold=1, labels=labels)
    again = split_indices(90, split, seed=7, fold=1, labels=labels)
    other = split_indices(90, split, seed=8, fold=1, labels=labels)
    assert all(np.array_equal(a, b) for a, b in zip(_parts(first), _parts(again), strict=True))
    assert not np.array_equal(first.test, other.test)


def test_predefined_test_part_leaves_every_row_to_train_and_validation():
    indices = split_indices(50, SplitSpec(), seed=0, has_test_part=True)
    assert indices.test.size == 0
    assert len(indices.train) + len(indices.val) == 50


def test_n_splits_counts_folds():
    assert n_splits(SplitSpec()) == 1
    assert n_splits(SplitSpec(method="kfold", n_folds=4)) == 4


def test_fold_out_of_range_names_the_valid_folds():
    with pytest.raises(SpecError, match=r"fold 3 does not exist.*numbered 0 to 2"):
        split_indices(60, SplitSpec(method="kfold", n_folds=3), seed=0, fold=3)


def test_stratified_kfold_needs_class_labels():
    with pytest.raises(SpecError, match="use method 'kfold'"):
        split_indices(60, SplitSpec(method="stratified_kfold"), seed=0, fold=0)


def test_rare_class_is_named_with_the_fix():
    labels = np.array([0] * 40 + [1] * 40 + [2])
    with pytest.raises(DataError, match=r"class.*2.*\(1 row\).*Fix: remove or merge"):
        split_indices(len(labels), SplitSpec(), seed=0, labels=labels)


def test_too_few_rows_per_class_for_stratified_folds():
    labels = np.array([0] * 50 + [1] * 4)
    with pytest.raises(DataError, match=r"at least 5 rows of every class.*lower split.n_folds"):
        split_indices(
            len(labels), SplitSpec(method="stratified_kfold", n_folds=5), seed=0, fold=0, labels=labels
        )


def test_invalid_seed_is_a_spec_error():
    with pytest.raises(SpecError, match="seed must be between"):
        split_indices(10, SplitSpec(), seed=-1)


@given(n_rows=st.integers(20, 500), max_rows=st.integers(10, 400))
@settings(max_examples=40, deadline=None)
def test_subsample_is_deterministic_sorted_and_stratified(n_rows, max_rows):
    labels = np.arange(n_rows) % 4
    keep, stratified = subsample_indices(n_rows, max_rows, labels=labels)
    again, _ = subsample_indices(n_rows, max_rows, labels=labels)
    assert np.array_equal(keep, again)
    assert len(keep) == min(n_rows, max_rows)
    assert np.all(np.diff(keep) > 0)
    if stratified:
        assert np.ptp(np.bincount(labels[keep], minlength=4)) <= 2


def test_subsample_of_a_series_keeps_its_first_rows():
    keep, _ = subsample_indices(100, 30, chronological=True)
    assert keep.tolist() == list(range(30))


def test_time_series_spec_survives_a_round_trip_through_its_dump():
    """spec.yaml of a forecasting study must load again (tunelab tune --resume reads it)."""
    from tunelab.data import DataSpec

    spec = DataSpec(source="series.csv", target="y", task="forecasting", split={"method": "timeseries"})
    assert DataSpec.model_validate(spec.model_dump(mode="json")) == spec
    with pytest.raises(ValueError, match="time order"):
        DataSpec(source="series.csv", target="y", split={"method": "timeseries", "shuffle": True})
