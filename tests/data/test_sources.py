"""Array sources: npz of every rank, IDX files (gz and raw), image folders, built-ins, Fashion-MNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tunelab.data import (
    FASHION_MNIST_CLASSES,
    DataSpec,
    Preprocessor,
    load_dataset,
    prepare_data,
    read_idx,
)

from .conftest import write_idx


def _state_json(preprocessor: Preprocessor) -> Preprocessor:
    encoded = json.dumps(preprocessor.to_state(), default=lambda value: value.tolist())
    return Preprocessor.from_state(json.loads(encoded))


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_values_shape_and_dtype(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 5
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    loaded = read_idx(path)
    assert loaded.dtype == np.int32
    assert loaded.dtype.isnative
    assert np.array_equal(loaded, array)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_with_its_own_test_part(idx_dir, compress):
    directory = idx_dir(compress=compress)
    bundle = prepare_data(DataSpec(source=str(directory)), seed=0)
    assert bundle.kind == "image"
    assert bundle.task == "classification"
    assert bundle.input_shape == (1, 6, 5)
    assert bundle.X_train.shape[1:] == (1, 6, 5)
    assert len(bundle.y_test) == 15, "the t10k files are the test part"
    assert len(bundle.y_train) + len(bundle.y_val) == 60
    assert bundle.indices.test.size == 0
    raw = read_idx(next(directory.glob("t10k-images*")))
    assert torch.equal(bundle.X_test[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))
    assert float(bundle.X_train.min()) >= 0
    assert float(bundle.X_train.max()) <= 1
    assert bundle.class_names == ["0", "1", "2"]


def test_idx_directory_without_test_files_splits_one_off(idx_dir):
    bundle = prepare_data(DataSpec(source=str(idx_dir(compress=True, with_test=False))), seed=0)
    assert len(bundle.y_train) + len(bundle.y_val) + len(bundle.y_test) == 60
    assert len(bundle.y_test) == 12


def test_image_folder_reads_classes_and_scales_pixels(image_folder):
    bundle = prepare_data(DataSpec(source=str(image_folder)), seed=0)
    assert bundle.class_names == ["circle", "square"]
    assert bundle.input_shape == (3, 8, 6)
    assert bundle.X_train.dtype == torch.float32
    red = torch.cat([bundle.X_train, bundle.X_val, bundle.X_test])[:, 0].mean(dim=(1, 2))
    labels = torch.cat([bundle.y_train, bundle.y_val, bundle.y_test])
    # The fixture made square images redder; that signal survives loading and scaling.
    assert red[labels == 1].min() > red[labels == 0].max()


def test_image_folder_resizes_to_image_size(image_folder):
    from PIL import Image

    Image.new("RGB", (20, 30), color=(10, 200, 30)).save(image_folder / "circle" / "big.png")
    bundle = prepare_data(DataSpec(source=str(image_folder), image_size=[4, 5]), seed=0)
    assert bundle.X_train.shape[1:] == (3, 4, 5)
    resized = prepare_data(DataSpec(source=str(image_folder), image_size=7), seed=0)
    assert resized.input_shape == (3, 7, 7)


def test_npz_tables_sequences_and_images(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(80) % 2
    cases = {
        "table": (rng.normal(size=(80, 5)), (5,), "table"),
        "sequence": (rng.normal(size=(80, 7, 3)), (7, 3), "sequence"),
        "gray": (rng.integers(0, 256, (80, 6, 6), dtype=np.uint8), (1, 6, 6), "image"),
        "color": (rng.integers(0, 256, (80, 3, 4, 4), dtype=np.uint8), (3, 4, 4), "image"),
    }
    for name, (X, shape, kind) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, X=X, y=labels)
        bundle = prepare_data(DataSpec(source=str(path)), seed=0)
        assert (bundle.kind, bundle.input_shape) == (kind, shape), name
        assert bundle.X_train.shape[1:] == shape
        assert bundle.y_train.dtype == torch.int64
        rebuilt = _state_json(bundle.preprocessor)
        assert torch.equal(rebuilt.transform(X[:10]), bundle.preprocessor.transform(X[:10])), name


def test_npz_sequences_standardized_per_feature_on_train(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(loc=[1.0, -5.0, 100.0], scale=[1.0, 2.0, 30.0], size=(100, 6, 3))
    y = X[:, -1, 0] + rng.normal(size=100)
    path = tmp_path / "s.npz"
    np.savez(path, X=X, y=y, X_test=X[:10], y_test=y[:10])
    bundle = prepare_data(DataSpec(source=str(path), kind="sequence"), seed=0)
    assert bundle.task == "regression"
    assert bundle.y_train.shape == (len(bundle.X_train), 1)
    assert len(bundle.y_test) == 10, "X_test / y_test are the test part"
    train = X[bundle.indices.train].reshape(-1, 3)
    np.testing.assert_allclose(bundle.preprocessor.features.mean, train.mean(axis=0), rtol=1e-12)
    flat = bundle.X_train.reshape(-1, 3).double()
    np.testing.assert_allclose(flat.mean(dim=0).numpy(), 0, atol=1e-5)


def test_npz_multi_target_regression(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    path = tmp_path / "m.npz"
    np.savez(path, features=X, targets=X[:, :2] * [3.0, 100.0])
    bundle = prepare_data(DataSpec(source=str(path), x_key="features", y_key="targets"), seed=0)
    assert bundle.task == "regression"
    assert bundle.output_dim == 2
    mean, std = bundle.target_scale
    assert mean.shape == std.shape == (2,)
    np.testing.assert_allclose(
        bundle.preprocessor.inverse_target(bundle.y_val), X[bundle.indices.val, :2] * [3, 100], rtol=1e-5
    )


@pytest.mark.parametrize(
    ("name", "kind", "shape", "task", "n_classes"),
    [
        ("iris", "table", (4,), "classification", 3),
        ("wine", "table", (13,), "classification", 3),
        ("breast_cancer", "table", (30,), "classification", 2),
        ("diabetes", "table", (10,), "regression", None),
        ("digits", "image", (1, 8, 8), "classification", 10),
    ],
)
def test_builtin_datasets(name, kind, shape, task, n_classes):
    bundle = prepare_data(DataSpec(source=name), seed=0)
    assert (bundle.kind, bundle.input_shape, bundle.task, bundle.n_classes) == (kind, shape, task, n_classes)
    if kind == "image":
        assert float(bundle.X_train.max()) == 1.0  # digits hold 0-16; scaled by the training maximum


def test_iris_class_names_come_from_scikit_learn():
    assert prepare_data(DataSpec(source="iris"), seed=0).class_names == ["setosa", "versicolor", "virginica"]


@pytest.mark.needs_fashion_mnist
def test_fashion_mnist_by_name_and_by_path(fashion_mnist_dir):
    by_name = prepare_data(DataSpec(source="fashion-mnist", max_rows=500), seed=0)
    assert by_name.class_names == FASHION_MNIST_CLASSES
    assert by_name.input_shape == (1, 28, 28)
    assert by_name.n_classes == 10
    assert len(by_name.y_train) + len(by_name.y_val) == 500
    assert len(by_name.y_test) == 500
    assert torch.bincount(by_name.y_test, minlength=10).tolist() == [50] * 10, (
        "t10k is balanced; so is its subset"
    )
    by_path = load_dataset(DataSpec(source=str(fashion_mnist_dir), max_rows=500))
    assert np.array_equal(by_path.target, load_dataset(DataSpec(source="fashion-mnist", max_rows=500)).target)
    predicted = by_name.preprocessor.inverse_target(torch.eye(10))
    assert predicted.tolist() == list(range(10))
