"""The preprocessor's state on disk (JSON + npz) comes back exactly, and applies exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tunelab.data import Preprocessor
from tunelab.errors import DataError, SpecError
from tunelab.export._state import read_state, write_state


def _round_trip(state: dict, tmp_path: Path) -> dict:
    write_state(state, tmp_path / "state.json", tmp_path / "state.npz")
    return read_state(tmp_path / "state.json", tmp_path / "state.npz")


def test_arrays_keep_their_dtype_and_bits(tmp_path: Path):
    rng = np.random.default_rng(0)
    state = {
        "f64": rng.normal(size=5),
        "f32": rng.normal(size=(2, 3)).astype(np.float32),
        "ints": np.arange(4, dtype=np.int16),
        "nested": [{"deep": np.array([np.pi, np.nan, -0.0])}],
    }
    back = _round_trip(state, tmp_path)
    for got, expected in [
        (back["f64"], state["f64"]),
        (back["f32"], state["f32"]),
        (back["ints"], state["ints"]),
        (back["nested"][0]["deep"], state["nested"][0]["deep"]),
    ]:
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()


def test_plain_values_text_arrays_and_numpy_scalars(tmp_path: Path):
    state = {
        "names": np.array(["a", "b"], dtype=object),
        "scale": np.float64(16.0),
        "window": np.int64(8),
        "tuple": (1, "x", None, True),
    }
    back = _round_trip(state, tmp_path)
    assert back == {"names": ["a", "b"], "scale": 16.0, "window": 8, "tuple": [1, "x", None, True]}
    assert "__array__" not in (tmp_path / "state.json").read_text(encoding="utf-8")  # nothing to npz


def test_an_object_that_is_not_plain_data_is_refused(tmp_path: Path):
    with pytest.raises(SpecError, match=r"holds a set at state.features.odd"):
        write_state({"features": {"odd": {1, 2}}}, tmp_path / "s.json", tmp_path / "s.npz")


def test_a_reference_to_a_missing_array(tmp_path: Path):
    write_state({"x": np.zeros(2)}, tmp_path / "s.json", tmp_path / "s.npz")
    np.savez(tmp_path / "s.npz")  # an archive without the array
    with pytest.raises(DataError, match=r"refers to array 'a0', which the npz file lacks"):
        read_state(tmp_path / "s.json", tmp_path / "s.npz")


@pytest.mark.parametrize("trained", ["table", "image", "sequence"], indirect=True)
def test_a_preprocessor_rebuilt_from_disk_transforms_bit_for_bit(tmp_path: Path, trained):
    fitted = trained.bundle.preprocessor
    rebuilt = Preprocessor.from_state(_round_trip(fitted.to_state(), tmp_path))
    raw = trained.raw if trained.raw_test is None else trained.raw_test
    assert rebuilt.transform(raw).numpy().tobytes() == fitted.transform(raw).numpy().tobytes()
    assert rebuilt.class_names == fitted.class_names
    assert rebuilt.input_columns == fitted.input_columns
