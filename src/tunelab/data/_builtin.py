"""Built-in datasets by name: scikit-learn's bundled sets (offline), Fashion-MNIST and fortunes (quotations by
topic, a text-classification set) from their Debian packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tunelab.data._hints import did_you_mean, listing
from tunelab.errors import DataError

__all__ = [
    "BUILTIN_NAMES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "fashion_mnist_dir",
    "load_sklearn",
    "unknown_builtin",
]

SKLEARN_NAMES = ("digits", "iris", "wine", "breast_cancer", "diabetes")
BUILTIN_NAMES = (*SKLEARN_NAMES, "fashion-mnist", "fortunes")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def unknown_builtin(name: str) -> DataError:
    return DataError(
        f"data source '{name}' is neither an existing path nor a built-in dataset."
        f"{did_you_mean(name, BUILTIN_NAMES)} "
        f"Built-ins: {listing(BUILTIN_NAMES)}. Fix: give the path of a CSV / Parquet / .npz file, an IDX "
        "directory or an image folder, or one of the built-in names."
    )


def load_sklearn(name: str) -> tuple[pd.DataFrame | np.ndarray, pd.Series, list[str] | None]:
    """Features, target and class names of a scikit-learn bundled dataset.

    ``digits`` comes as 8x8 grayscale images ``[N, 1, 8, 8]`` (pixel values 0-16); the others as tables.
    """
    from sklearn import datasets

    loaders = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }
    if name not in loaders:
        raise unknown_builtin(name)
    bunch = loaders[name]()
    names = [str(label) for label in bunch.target_names] if "target_names" in bunch else None
    target = pd.Series(bunch.target, name="target")
    if name == "digits":
        return bunch.images[:, None].astype(np.float32), target, names
    return pd.DataFrame(bunch.data, columns=list(bunch.feature_names)), target, names


def fashion_mnist_dir() -> Path:
    """The installed Fashion-MNIST IDX directory, or a DataError saying how to install it."""
    directory = FASHION_MNIST_DIR
    if not directory.is_dir():
        raise DataError(
            f"Fashion-MNIST is not installed (looked in {directory}). Fix: run "
            "`apt-get install -y dataset-fashion-mnist`, or download the four IDX files "
            "(train-images-idx3-ubyte.gz, ...) and pass their directory as the source."
        )
    return directory
