"""Free-text columns end to end through the data layer: found by their values (or named), tokenized on the
training part only, mixed with table columns; text folders and the built-in fortunes set; bad text input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests._text import WORDS, topic_texts

from tunelab.data import DataSpec, load_dataset, prepare_data
from tunelab.errors import DataError
from tunelab.inputs import PAD_ID, UNKNOWN_ID


def test_a_free_text_column_is_found_by_its_values_and_kept_beside_the_table(tmp_path: Path):
    frame = topic_texts(200)
    rng = np.random.default_rng(1)
    frame["price"] = rng.normal(10, 3, size=len(frame))
    frame["colour"] = rng.choice(["red", "blue"], size=len(frame))
    frame["name"] = [f"item {i}" for i in range(len(frame))]  # short and distinct: an identifier
    frame.to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec(source=str(tmp_path / "t.csv"), target="label")
    dataset = load_dataset(spec)
    assert dataset.kind == "text"
    assert dataset.text_columns == ("review",)
    assert any("'review' holds free text" in notice for notice in dataset.notices)
    assert any("'name' looks like an identifier" in notice for notice in dataset.notices)
    bundle = prepare_data(spec, seed=0)
    text = bundle.text
    assert text is not None
    assert text.features == 3  # price, colour=blue, colour=red
    assert bundle.input_shape == (text.length + 3,)
    ids = bundle.X_train[:, : text.length]
    assert torch_equal_integers(ids)
    assert int(ids.max()) < text.vocab_size
    # the table part is standardized on the training rows, after the ids
    price = bundle.X_train[:, text.length]
    assert abs(float(price.mean())) < 1e-5
    assert abs(float(price.std(unbiased=False)) - 1) < 1e-4


def torch_equal_integers(values) -> bool:
    return bool((values == values.round()).all())


def test_the_vocabulary_comes_from_the_training_rows_only(tmp_path: Path):
    frame = topic_texts(120)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    spec = DataSpec(source=str(path), target="label")
    indices = prepare_data(spec, seed=0).indices
    assert indices is not None
    # the split depends on the labels and the seed only: put a new word in one training and one test row
    train_row, test_row = int(indices.train[0]), int(indices.test[0])
    frame.loc[train_row, "review"] = "zyzzyva zyzzyva " + frame["review"].iloc[train_row]
    frame.loc[test_row, "review"] = "quokka quokka " + frame["review"].iloc[test_row]
    frame.to_csv(path, index=False)
    bundle = prepare_data(spec, seed=0)
    assert bundle.text is not None
    assert "zyzzyva" in bundle.text.vocabulary
    assert "quokka" not in bundle.text.vocabulary
    row = bundle.X_test[0]
    assert int(row[0]) == UNKNOWN_ID
    assert int(row[1]) == UNKNOWN_ID


def test_named_text_columns_override_the_guess(tmp_path: Path):
    frame = topic_texts(100)
    frame["title"] = [f"title {i}" for i in range(len(frame))]
    frame.to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec(source=str(tmp_path / "t.csv"), target="label", text_columns=["title", "review"])
    dataset = load_dataset(spec)
    assert dataset.text_columns == ("review", "title")  # in the table's column order
    bundle = prepare_data(spec, seed=0)
    assert bundle.text is not None
    assert "[SEP]" in bundle.text.vocabulary


def test_a_text_folder_and_the_builtin_fortunes(tmp_path: Path):
    for topic, words in WORDS.items():
        (tmp_path / "docs" / topic).mkdir(parents=True)
        for i in range(8):
            (tmp_path / "docs" / topic / f"{i}.txt").write_text(" ".join(words[i : i + 3] * 2))
    dataset = load_dataset(DataSpec(source=str(tmp_path / "docs")))
    assert dataset.kind == "text"
    assert sorted(set(dataset.target)) == sorted(WORDS)
    assert len(dataset.target) == 24
    if not Path("/usr/share/games/fortunes").is_dir():
        pytest.skip("the fortunes package is not installed (apt-get install fortunes)")
    fortunes = load_dataset(DataSpec(source="fortunes"))
    assert fortunes.kind == "text"
    assert fortunes.task == "classification"
    assert len(set(fortunes.target)) >= 6


def test_padding_fills_short_texts_and_long_ones_are_cut(tmp_path: Path):
    frame = topic_texts(100)
    frame.loc[0, "review"] = " ".join(["code"] * 300)
    frame.to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec(source=str(tmp_path / "t.csv"), target="label", text={"max_length": 16})
    bundle = prepare_data(spec, seed=0)
    assert bundle.text is not None
    assert bundle.text.length == 16
    X = pd.DataFrame({"review": ["code", " ".join(["code"] * 300), None]})
    assert bundle.preprocessor is not None
    ids = bundle.preprocessor.transform(X)
    assert (ids[0, 1:] == PAD_ID).all()
    assert (ids[1] != PAD_ID).all()
    assert (ids[2] == PAD_ID).all()  # a missing text is an empty one


@pytest.mark.parametrize(
    ("change", "spec_fields", "fragments"),
    [
        ("whitespace", {"text_columns": ["review"]}, ["every text", "empty"]),
        ("none", {"text_columns": ["nope"]}, ["text_columns names 'nope'"]),
        ("none", {"text_columns": ["score"]}, ["holds numbers, not text"]),
        ("none", {"target": "review"}, ["holds free text", "not labels"]),
    ],
)
def test_bad_text_input_says_what_to_fix(tmp_path: Path, change, spec_fields, fragments):
    frame = topic_texts(60)
    frame["score"] = np.arange(len(frame), dtype=float)
    if change == "whitespace":
        frame["review"] = "   "
        frame = frame.drop(columns=["score"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    fields = {"source": str(tmp_path / "t.csv"), "target": "label", **spec_fields}
    with pytest.raises(DataError) as caught:
        load_dataset(DataSpec(**fields))
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_file_in_another_encoding_is_an_error_naming_the_fix_and_reads_with_it(tmp_path: Path):
    frame = topic_texts(60)
    frame.loc[0, "review"] = "café crème brûlée and the bread"
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(DataError, match="encoding"):
        load_dataset(DataSpec(source=str(path), target="label"))
    dataset = load_dataset(DataSpec(source=str(path), target="label", encoding="latin-1"))
    assert "café" in dataset.features["review"].iloc[0]
