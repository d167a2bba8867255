"""Bad input: every case raises DataError / SpecError with a message that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest

from tunelab.data import DataSpec, Preprocessor, _builtin, load_dataset, prepare_data, read_idx
from tunelab.errors import DataError, SpecError

from .conftest import make_table, write_idx


def _csv(tmp_path, frame: pd.DataFrame, name: str = "t.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _load(source, **options):
    return load_dataset(DataSpec(source=str(source), **options))


# --- files -------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"does not exist\. Fix: check the path"):
        _load(tmp_path / "nope.csv", target="y")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"is empty \(0 bytes\)"):
        _load(path, target="y")


def test_header_without_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,y\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        _load(path, target="y")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*broken\.parquet as parquet.*Fix"):
        _load(path, target="y")


def test_wrong_delimiter_is_named(tmp_path):
    path = tmp_path / "semicolons.csv"
    make_table().to_csv(path, index=False, sep=";")
    with pytest.raises(DataError, match=r"looks separated by ';'\. Fix: set delimiter: ';'"):
        _load(path, target="label")
    assert _load(path, target="label", delimiter=";").n_rows == 150


def test_unknown_suffix_asks_for_format(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"cannot tell the format.*Fix: set format"):
        _load(path, target="y")


def test_unknown_builtin_suggests_the_closest_name():
    with pytest.raises(DataError, match=r"Did you mean 'digits'\?.*Built-ins: 'digits', 'iris'"):
        _load("digts")


def test_option_for_another_format_is_rejected():
    with pytest.raises(SpecError, match="`target` applies to tables"):
        _load("iris", target="species")
    with pytest.raises(SpecError, match="`image_size` applies to image folders"):
        _load("iris", image_size=8)


# --- table columns -----------------------------------------------------------------------------------------


def test_table_without_target_lists_the_columns(tmp_path):
    with pytest.raises(SpecError, match=r"needs `target`.*'id', 'age'"):
        _load(_csv(tmp_path, make_table()))


def test_missing_target_column_lists_columns_and_suggests(tmp_path):
    with pytest.raises(
        DataError, match=r"'lable' is not in t\.csv\. Did you mean 'label'\?.*Available columns: 'id'"
    ):
        _load(_csv(tmp_path, make_table()), target="lable")


def test_unknown_drop_column(tmp_path):
    with pytest.raises(DataError, match=r"drop_columns names 'colour'.*Did you mean 'color'"):
        _load(_csv(tmp_path, make_table()), target="label", drop_columns=["colour"])


def test_single_class_target(tmp_path):
    with pytest.raises(DataError, match=r"single class \('yes'\).*needs at least two"):
        _load(_csv(tmp_path, make_table().assign(label="yes")), target="label")


def test_target_without_values(tmp_path):
    with pytest.raises(DataError, match=r"'label' in t\.csv has no values"):
        _load(_csv(tmp_path, make_table().assign(label=np.nan)), target="label")


def test_text_target_for_regression(tmp_path):
    with pytest.raises(DataError, match=r"non-numeric values such as 'high'.*Fix: set task: classification"):
        _load(_csv(tmp_path, make_table()), target="label", task="regression")


def test_column_of_lists_cannot_be_encoded(tmp_path):
    frame = make_table().assign(tags=[[index, index + 1] for index in range(150)])
    path = tmp_path / "lists.parquet"
    frame.to_parquet(path)
    with pytest.raises(
        DataError, match=r"column 'tags' cannot be encoded.*ndarray.*add 'tags' to drop_columns"
    ):
        _load(path, target="label")


def test_no_usable_feature_left(tmp_path):
    frame = pd.DataFrame({"name": [f"n{index}" for index in range(20)], "y": [0, 1] * 10})
    with pytest.raises(DataError, match="no usable feature columns are left"):
        _load(_csv(tmp_path, frame), target="y")


def test_unknown_label_at_transform_target(tmp_path):
    bundle = prepare_data(DataSpec(source=_csv(tmp_path, make_table()), target="label"), seed=0)
    with pytest.raises(
        DataError, match=r"labels 'huge' are not among the trained classes 'high', 'low', 'mid'"
    ):
        bundle.preprocessor.transform_target(np.array(["high", "huge"], dtype=object))


# --- arrays ------------------------------------------------------------------------------------------------


def test_npz_without_the_keys(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, features=np.zeros((10, 2)), Y=np.zeros(10))
    with pytest.raises(DataError, match=r"no array\(s\) 'X', 'y'.*holds 'features', 'Y'.*set x_key / y_key"):
        _load(path)


def test_npz_channels_last_images(tmp_path):
    path = tmp_path / "hwc.npz"
    np.savez(path, X=np.zeros((10, 8, 8, 3), dtype=np.uint8), y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"channels-last.*X\.transpose\(0, 3, 1, 2\)"):
        _load(path)


def test_npz_rows_disagree(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((10, 2)), y=np.zeros(9))
    with pytest.raises(DataError, match=r"y in bad\.npz has shape \[9\] but X has 10 rows"):
        _load(path)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"not an IDX file: it should start with two zero bytes.*01 02 08 01"):
        read_idx(path)


def test_idx_unknown_dtype_code(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x02\x00\x00")
    with pytest.raises(DataError, match=r"dtype code 0x07; expected one of 0x08"):
        read_idx(path)


def test_idx_truncated_data(tmp_path):
    path = tmp_path / "x.idx.gz"
    write_idx(path, np.zeros((4, 3), dtype=np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"declares shape \(4, 3\) \(12 bytes of data\) but holds 10 bytes"):
        read_idx(path)


def test_idx_directory_missing_labels(idx_dir):
    directory = idx_dir(compress=True)
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks train-labels-idx1-ubyte \(raw or \.gz\)"):
        _load(directory, format="idx")


def test_image_folder_without_classes(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"has no class sub-folders.*one sub-folder per class"):
        _load(tmp_path, format="image_folder")


def test_image_folder_with_an_empty_class(image_folder):
    (image_folder / "triangle").mkdir()
    with pytest.raises(DataError, match=r"triangle holds no images.*remove the folder"):
        _load(image_folder)


def test_unreadable_image(image_folder):
    (image_folder / "circle" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png.*remove or replace"):
        _load(image_folder)


def test_images_of_different_sizes_need_image_size(image_folder):
    from PIL import Image

    Image.new("L", (3, 3)).save(image_folder / "square" / "small.png")
    with pytest.raises(DataError, match=r"images differ in size.*8x6.*3x3.*set image_size"):
        _load(image_folder)


def test_fashion_mnist_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(_builtin, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match=r"apt-get install -y dataset-fashion-mnist.*pass their directory"):
        _load("fashion-mnist")


def test_preprocessor_state_of_another_version():
    with pytest.raises(DataError, match="state version 99 is not supported"):
        Preprocessor.from_state({"version": 99})


# --- the spec ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"split": {"test_fraction": 1.5}}, "less than 1"),
        ({"split": {"n_folds": 1}}, "greater than or equal to 2"),
        ({"split": {"method": "timeseries", "shuffle": True}}, "keeps rows in time order"),
        ({"split": {"method": "bootstrap"}}, "'holdout', 'kfold', 'stratified_kfold' or 'timeseries'"),
        ({"format": "xlsx"}, "'auto', 'csv', 'parquet'"),
        ({"target": "y", "drop_columns": ["y"]}, "also in drop_columns"),
        ({"drop_columns": ["a", "a"]}, r"lists \['a'\] more than once"),
        ({"task": "forecasting"}, "needs `target`"),
        ({"task": "forecasting", "target": "y", "split": {"method": "kfold"}}, "train on the future"),
        ({"target": "y", "time_column": "y"}, "both the target and the time_column"),
        ({"task": "forecasting", "target": "y", "split": {"shuffle": True}}, "keep rows in time order"),
        ({"image_size": [0, 4]}, "must be positive"),
        ({"window": 0}, "greater than or equal to 1"),
        ({"targets": "y"}, "Extra inputs are not permitted"),
    ],
)
def test_spec_validation(options, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        DataSpec(source="t.csv", **options)
