"""Small real files written in tmp_path: a mixed-type CSV, IDX files, an image folder."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_ROWS = 150


def make_table(n_rows: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """Numeric + categorical columns with missing values, a unique text id, and a 3-class text label that
    depends on the features (so the data is learnable, not noise)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n_rows).astype(float)
    income = rng.normal(50_000, 15_000, n_rows)
    color = rng.choice(["red", "green", "blue"], n_rows).astype(object)
    score = age / 10 + (color == "red") * 3 + rng.normal(0, 1, n_rows)
    label = np.where(score > 7, "high", np.where(score > 5, "mid", "low"))
    age[rng.choice(n_rows, 10, replace=False)] = np.nan
    color[rng.choice(n_rows, 8, replace=False)] = None
    return pd.DataFrame(
        {
            "id": [f"user-{index:04d}" for index in range(n_rows)],
            "age": age,
            "income": income,
            "color": color,
            "row": np.arange(n_rows, dtype=float),  # numeric and unique: kept, and lets tests trace rows
            "label": label,
        }
    )


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    make_table().to_csv(path, index=False)
    return path


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    """Write an IDX file: two zero bytes, dtype code, rank, big-endian dims, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an MNIST-layout directory of random 6x5 images in 3 classes, gzipped or raw."""

    def make(*, compress: bool, with_test: bool = True, n_train: int = 60, n_test: int = 15) -> Path:
        rng = np.random.default_rng(1)
        directory = tmp_path / f"idx-{'gz' if compress else 'raw'}"
        directory.mkdir()
        suffix = ".gz" if compress else ""
        for split, size in (("train", n_train), ("t10k", n_test)):
            if split == "t10k" and not with_test:
                continue
            images = rng.integers(0, 256, (size, 6, 5), dtype=np.uint8)
            labels = (np.arange(size) % 3).astype(np.uint8)
            write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, compress=compress)
            write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        return directory

    return make


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of 8x6 RGB PNGs whose red channel tells the class."""
    from PIL import Image

    root = tmp_path / "shapes"
    rng = np.random.default_rng(2)
    for class_id, name in enumerate(["circle", "square"]):
        (root / name).mkdir(parents=True)
        for index in range(12):
            pixels = rng.integers(0, 120, (8, 6, 3), dtype=np.uint8)
            pixels[..., 0] += np.uint8(120 * class_id)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root
