"""CSV / Parquet tables: column handling, preprocessing fitted on train only, predict-time transform."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tunelab.data import DataSpec, Preprocessor, load_dataset, n_splits, prepare_data
from tunelab.errors import DataError

from .conftest import N_ROWS, make_table


def _source_rows(bundle, inputs: torch.Tensor) -> np.ndarray:
    """Recover the 'row' column (the source row number) from standardized features."""
    fitted = bundle.preprocessor.features
    column = fitted.numeric.index("row")
    return np.rint(inputs[:, column].double().numpy() * fitted.scale[column] + fitted.mean[column]).astype(
        int
    )


def test_csv_bundle_shapes_dtypes_and_column_handling(table_csv):
    bundle = prepare_data(DataSpec(source=str(table_csv), target="label"), seed=0)
    assert bundle.task == "classification"
    assert bundle.kind == "table"
    assert bundle.class_names == ["high", "low", "mid"]
    assert bundle.n_classes == bundle.output_dim == 3
    # 'id' is left out; 'color' becomes one column per category; numeric columns first.
    assert bundle.feature_names == ["age", "income", "row", "color=blue", "color=green", "color=red"]
    assert bundle.input_shape == (6,)
    for X, y in (
        (bundle.X_train, bundle.y_train),
        (bundle.X_val, bundle.y_val),
        (bundle.X_test, bundle.y_test),
    ):
        assert X.dtype == torch.float32
        assert X.shape[1:] == (6,)
        assert y.dtype == torch.int64
        assert y.shape == (len(X),)
        assert torch.isfinite(X).all(), "missing values must be imputed"
        assert torch.all(X[:, 3:].sum(dim=1) == 1), "each row has exactly one colour after imputation"
    assert len(bundle.y_train) + len(bundle.y_val) + len(bundle.y_test) == N_ROWS
    assert any("'id' looks like an identifier" in notice for notice in bundle.notices)
    assert any("task inferred as classification" in notice for notice in bundle.notices)
    assert bundle.target_scale is None
    assert "3 classes (high, low, mid)" in bundle.describe()


def test_rows_are_in_exactly_one_part_and_labels_follow_them(table_csv):
    bundle = prepare_data(DataSpec(source=str(table_csv), target="label"), seed=3)
    parts = [_source_rows(bundle, X) for X in (bundle.X_train, bundle.X_val, bundle.X_test)]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(N_ROWS))
    assert [part.tolist() for part in parts] == [
        part.tolist() for part in (bundle.indices.train, bundle.indices.val, bundle.indices.test)
    ]
    labels = make_table()["label"].to_numpy()
    decoded = bundle.preprocessor.inverse_target(bundle.y_test)
    assert decoded.tolist() == labels[parts[2]].tolist()


def test_preprocessing_is_fitted_on_the_training_part_only(table_csv):
    bundle = prepare_data(DataSpec(source=str(table_csv), target="label"), seed=0)
    features = bundle.preprocessor.features
    train = make_table().iloc[bundle.indices.train]
    whole = make_table()
    income = features.numeric.index("income")
    assert features.mean[income] == pytest.approx(train["income"].mean(), rel=1e-12)
    assert features.mean[income] != pytest.approx(whole["income"].mean(), rel=1e-6)
    assert features.scale[income] == pytest.approx(train["income"].std(ddof=0), rel=1e-12)
    age = features.numeric.index("age")
    assert features.fill[age] == pytest.approx(train["age"].median())
    assert features.category_fill == [train["color"].mode()[0]]
    # Standardized training columns have mean 0 and std 1; validation columns generally do not.
    assert bundle.X_train[:, income].double().mean().item() == pytest.approx(0.0, abs=1e-6)
    assert bundle.X_train[:, income].double().std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_transform_equals_scikit_learns_fitted_transformers(table_csv):
    bundle = prepare_data(DataSpec(source=str(table_csv), target="label"), seed=1)
    train = make_table().iloc[bundle.indices.train]
    numeric, categorical = ["age", "income", "row"], ["color"]
    imputed = SimpleImputer(strategy="median").fit(train[numeric]).transform(train[numeric])
    expected_numeric = StandardScaler().fit(imputed).transform(imputed)
    colors = train[categorical].astype(object).to_numpy()
    imputer = SimpleImputer(strategy="most_frequent").fit(colors)
    expected_onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit_transform(
        imputer.transform(colors)
    )
    expected = np.hstack([expected_numeric, expected_onehot]).astype(np.float32)
    np.testing.assert_allclose(bundle.X_train.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_parquet_copy_gives_the_same_bundle(table_csv, tmp_path):
    parquet = tmp_path / "people.parquet"
    pd.read_csv(table_csv).to_parquet(parquet)
    from_csv = prepare_data(DataSpec(source=str(table_csv), target="label"), seed=0)
    from_parquet = prepare_data(DataSpec(source=str(parquet), target="label"), seed=0)
    for name in ("X_train", "y_train", "X_val", "X_test", "y_test"):
        assert torch.equal(getattr(from_csv, name), getattr(from_parquet, name)), name
    assert from_csv.feature_names == from_parquet.feature_names


def test_predict_transform_on_new_rows_without_target(table_csv, tmp_path):
    bundle = prepare_data(DataSpec(source=str(table_csv), target="label"), seed=0)
    frame = make_table().iloc[bundle.indices.test]
    new = tmp_path / "new.csv"
    frame.drop(columns=["label"]).assign(color=lambda f: f["color"].replace("blue", "purple")).to_csv(
        new, index=False
    )
    transformed = bundle.preprocessor.transform(pd.read_csv(new))
    unchanged = torch.tensor((frame["color"] != "blue").to_numpy())
    assert torch.equal(transformed[unchanged], bundle.X_test[unchanged])
    # An unseen category encodes as all zeros (handle_unknown="ignore").
    assert torch.all(transformed[~unchanged, 3:] == 0)
    with pytest.raises(DataError, match=r"lacks column\(s\) 'income'.*Fix: add them"):
        bundle.preprocessor.transform(pd.read_csv(new).drop(columns=["income"]))
    with pytest.raises(DataError, match="column 'age' should hold numbers"):
        bundle.preprocessor.transform(pd.read_csv(new).assign(age="old"))


def _json_round_trip(state: dict) -> dict:
    """Store the state as JSON (arrays as lists), proving it needs no pickle."""

    def encode(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"not JSON-able: {type(value)}")

    return json.loads(json.dumps(state, default=encode))


@pytest.mark.parametrize("target", ["label", "income"])
def test_preprocessor_state_round_trip_gives_identical_outputs(table_csv, target):
    bundle = prepare_data(DataSpec(source=str(table_csv), target=target), seed=0)
    rebuilt = Preprocessor.from_state(_json_round_trip(bundle.preprocessor.to_state()))
    frame = make_table()
    assert torch.equal(rebuilt.transform(frame), bundle.preprocessor.transform(frame))
    outputs = torch.randn(5, bundle.output_dim, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(rebuilt.inverse_target(outputs), bundle.preprocessor.inverse_target(outputs))
    assert rebuilt.feature_names == bundle.feature_names
    assert rebuilt.class_names == bundle.class_names
    assert rebuilt.input_shape == bundle.input_shape


def test_regression_targets_are_standardized_with_train_statistics(table_csv):
    bundle = prepare_data(DataSpec(source=str(table_csv), target="income"), seed=0)
    assert bundle.task == "regression"
    assert bundle.y_train.dtype == torch.float32
    assert bundle.y_train.shape == (len(bundle.X_train), 1)
    mean, std = bundle.target_scale
    train_income = make_table()["income"].to_numpy()[bundle.indices.train]
    assert mean.item() == pytest.approx(train_income.mean(), rel=1e-6)
    assert std.item() == pytest.approx(train_income.std(), rel=1e-6)
    original = bundle.preprocessor.inverse_target(bundle.y_test)
    np.testing.assert_allclose(
        original[:, 0], make_table()["income"].to_numpy()[bundle.indices.test], rtol=1e-6
    )
    # 'label' is a feature now, one-hot encoded.
    assert "label=mid" in bundle.feature_names


def test_task_inference_and_override(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.normal(size=200), "grade": rng.integers(1, 6, 200), "price": rng.normal(size=200)}
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    assert load_dataset(DataSpec(source=str(path), target="grade")).task == "classification"
    assert load_dataset(DataSpec(source=str(path), target="price")).task == "regression"
    forced = prepare_data(DataSpec(source=str(path), target="grade", task="regression"), seed=0)
    assert forced.task == "regression"
    assert forced.y_train.dtype == torch.float32


def test_rows_with_missing_target_are_dropped_with_a_notice(tmp_path):
    frame = make_table()
    frame.loc[[3, 7, 11], "label"] = None
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(DataSpec(source=str(path), target="label"))
    assert dataset.n_rows == N_ROWS - 3
    assert "3 row(s) without a 'label' value were dropped" in dataset.notices


def test_kfold_over_a_table_validates_every_non_test_row_once(table_csv):
    spec = DataSpec(source=str(table_csv), target="label", split={"method": "stratified_kfold", "n_folds": 3})
    dataset = load_dataset(spec)
    bundles = [prepare_data(spec, seed=0, fold=fold, dataset=dataset) for fold in range(n_splits(spec))]
    validated = np.concatenate([_source_rows(bundle, bundle.X_val) for bundle in bundles])
    test = _source_rows(bundles[0], bundles[0].X_test)
    assert np.array_equal(np.sort(np.concatenate([validated, test])), np.arange(N_ROWS))


def test_max_rows_takes_a_stratified_deterministic_subset(table_csv):
    spec = DataSpec(source=str(table_csv), target="label", max_rows=60)
    first, second = load_dataset(spec), load_dataset(spec)
    assert first.n_rows == 60
    assert first.features.equals(second.features)
    full = make_table()["label"].value_counts(normalize=True)
    sub = pd.Series(first.target).value_counts(normalize=True)
    assert (sub - full).abs().max() < 0.05


def test_time_column_orders_the_rows(tmp_path):
    frame = pd.DataFrame(
        {
            "when": ["2024-01-03", "2024-01-01", "2024-01-02"] * 10,
            "x": np.arange(30.0),
            "y": np.arange(30.0) % 2,
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(DataSpec(source=str(path), target="y", time_column="when"))
    assert "rows were sorted by 'when'" in dataset.notices
    assert dataset.features["x"].tolist()[:3] == [1.0, 4.0, 7.0]
    assert "when" not in dataset.features.columns
