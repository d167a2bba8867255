"""Text features: a tokenizer fitted on the training rows only, frequency-ordered ids, padding and cutting,
several text columns, mixed tables, and a state that round-trips through JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunelab.data._table_features import TableFeatures
from tunelab.data._text_features import TextFeatures, clean_text
from tunelab.data._text_sources import read_fortunes
from tunelab.errors import DataError, SpecError
from tunelab.inputs import PAD_ID, UNKNOWN_ID, TextInput

SEP_ID = 2
KINDS = ["word", "wordpiece", "bpe"]
needs_fortunes = pytest.mark.skipif(
    not Path("/usr/share/games/fortunes").is_dir(),
    reason="needs the Debian fortunes quotations in /usr/share/games/fortunes (apt-get install fortunes)",
)


def _frame(texts: list[object], name: str = "text") -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(texts, dtype=object)})


def _ids(features: TextFeatures, *words: str) -> list[int]:
    vocabulary = features.vocabulary
    return [vocabulary.index(word) if word in vocabulary else UNKNOWN_ID for word in words]


@pytest.fixture(scope="module")
def fortunes() -> pd.DataFrame:
    if not Path("/usr/share/games/fortunes").is_dir():
        pytest.skip("needs /usr/share/games/fortunes (apt-get install fortunes)")
    return read_fortunes()


def test_clean_text_resolves_overstriking_and_drops_control_characters():
    assert clean_text("_\bb_\bo_\bl_\bd and b\bbo\bol\bld") == "bold and bold"
    assert clean_text("with what ____\b\b\b\bdoes exist") == "with what does exist"
    assert clean_text("x\b_ stays x") == "x stays x"
    assert clean_text("ring\x07 the\x00 bell\x1b[0m \x85") == "ring the bell[0m"
    assert clean_text("  two\n\nlines\tand\r\n tabs  ") == "two lines and tabs"
    assert clean_text("naïve café 東京 “quoted”") == "naïve café 東京 “quoted”"


def test_fit_sees_only_the_training_rows():
    train = _frame(["the cat sat", "the cat ran", "a dog sat"] * 3)
    features = TextFeatures.fit(train, ["text"])
    assert "xylophone" not in features.vocabulary
    X = features.apply(_frame(["the xylophone sat"]))
    assert X.dtype == np.float32
    assert X.shape == (1, features.max_length)
    assert X[0, :3].tolist() == [_ids(features, "the")[0], UNKNOWN_ID, _ids(features, "sat")[0]]
    assert X[0, 3:].tolist() == [PAD_ID] * (features.max_length - 3)


def test_word_ids_are_most_frequent_first_and_rare_words_unknown():
    texts = ["zeta"] * 5 + ["mid"] * 4 + ["beta alpha"] * 3 + ["rare"]
    features = TextFeatures.fit(_frame(texts), ["text"])  # min_frequency=2
    assert features.vocabulary == ("[PAD]", "[UNK]", "[SEP]", "zeta", "mid", "alpha", "beta")
    assert features.vocab_size == 7
    assert features.apply(_frame(["rare zeta"]))[0, :2].tolist() == [UNKNOWN_ID, 3]
    # An explicit vocabulary keeps the most frequent tokens; the others read as unknown.
    small = TextFeatures.fit(_frame(texts), ["text"], vocab_size=5)
    assert small.vocabulary == ("[PAD]", "[UNK]", "[SEP]", "zeta", "mid")
    assert small.apply(_frame(["alpha mid"]))[0, :2].tolist() == [UNKNOWN_ID, 4]
    assert small.chosen == ("max_length",)
    everything = TextFeatures.fit(_frame(texts), ["text"], min_frequency=1)
    assert everything.vocabulary[-1] == "rare"


def test_document_frequencies_count_texts_in_id_order():
    """In how many training texts each id occurs (a repeat in one text counts once), in the renumbered id
    order, with the text count: what weighted pooling starts its token weights from."""
    texts = ["zeta zeta zeta zeta", "zeta mid", "mid", "mid beta", "beta", "once", ""]
    features = TextFeatures.fit(_frame(texts), ["text"])  # "once" is unknown (min_frequency=2)
    assert features.vocabulary == ("[PAD]", "[UNK]", "[SEP]", "zeta", "mid", "beta")
    assert features.document_frequency == (0, 1, 0, 2, 3, 2)
    assert features.documents == 7
    text = features.text_input
    assert (text.document_frequency, text.documents) == (features.document_frequency, 7)
    assert text.inverse_document_frequency()[4] == pytest.approx(1 + np.log(8 / 4))


@needs_fortunes
def test_word_vocabulary_is_every_frequent_token_in_frequency_order(fortunes):
    features = TextFeatures.fit(fortunes[["text"]], ["text"])
    tokenizer = features.tokenizer
    assert tokenizer.normalizer is not None
    assert tokenizer.pre_tokenizer is not None
    counts: Counter[str] = Counter()
    for text in fortunes["text"]:
        words = tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(clean_text(text)))
        counts.update(word for word, _ in words)
    frequent = {word for word, count in counts.items() if count >= 2}
    vocabulary = features.vocabulary
    assert set(vocabulary[3:]) == frequent
    assert features.vocab_size == len(frequent) + 3
    ordered = [counts[word] for word in vocabulary[3:]]
    assert ordered == sorted(ordered, reverse=True)
    assert vocabulary[3] == "."  # the most frequent token of the quotations, ahead of "the"
    assert features.chosen == ("vocab_size", "max_length")


@needs_fortunes
@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_subword_ids_are_most_frequent_first(fortunes, kind):
    train = fortunes[["text"]].iloc[::2]
    features = TextFeatures.fit(train, ["text"], tokenizer=kind, vocab_size=2000, max_length=512)
    assert features.truncated_share == 0.0
    assert features.vocab_size == 2000
    ids = features.apply(train).astype(np.int64)
    counts = np.bincount(ids.ravel(), minlength=features.vocab_size)
    assert counts[UNKNOWN_ID] == 0  # every character of the training rows is in the alphabet
    assert np.all(np.diff(counts[3:]) <= 0)
    assert counts[3] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_each_tokenizer_kind_encodes_known_and_unknown_text(kind):
    texts = ["the quick brown fox jumps over the lazy dog", "a lazy dog sleeps", "quick thinking wins"] * 4
    features = TextFeatures.fit(_frame(texts), ["text"], tokenizer=kind, min_frequency=1)
    assert features.kind == kind
    assert features.vocabulary[:3] == ("[PAD]", "[UNK]", "[SEP]")
    assert features.vocab_size < 8000  # capped by what the data supports
    X = features.apply(_frame(["the lazy fox", "Ω", ""]))
    assert X.shape == (3, features.max_length)
    assert X.min() >= 0
    assert X.max() < features.vocab_size
    assert np.all(np.rint(X) == X)
    assert np.count_nonzero(X[0]) >= 3  # at least one token per word
    assert X[0, 0] >= 3
    assert X[1, 0] == UNKNOWN_ID  # a character never seen in training
    assert not X[2].any()


def test_truncation_and_padding():
    texts = [" ".join(f"w{index % 5}" for index in range(20)), "w1 w2"] * 2
    features = TextFeatures.fit(_frame(texts), ["text"], max_length=8)
    X = features.apply(_frame(texts[:2]))
    assert X.shape == (2, 8)
    assert X[0].tolist() == _ids(features, *[f"w{index % 5}" for index in range(8)])
    assert X[1].tolist() == [*_ids(features, "w1", "w2"), *[PAD_ID] * 6]
    assert features.truncated_share == 0.5
    assert "50.0% of the training texts are cut" in features.describe()


def test_empty_and_missing_texts_are_all_padding():
    features = TextFeatures.fit(_frame(["some words here", "more words"] * 2), ["text"], min_frequency=1)
    X = features.apply(_frame(["", None, np.nan, pd.NA, "   \n\t", "\b\x07", "words"]))
    assert not X[:6].any()
    assert X[6, 0] == _ids(features, "words")[0]


def test_all_empty_training_texts_are_an_error():
    with pytest.raises(DataError, match="empty in all 3 training rows"):
        TextFeatures.fit(_frame(["", None, "  "]), ["text"])


def test_several_text_columns_are_joined_with_sep():
    frame = pd.DataFrame(
        {
            "title": ["good film", "bad film", None, None],
            "body": ["really good", "so bad", "bad bad", None],
        }
    )
    features = TextFeatures.fit(frame, ["title", "body"], min_frequency=1)
    assert features.input_columns == ["title", "body"]
    X = features.apply(frame).astype(int)
    good, film, really, bad, so = _ids(features, "good", "film", "really", "bad", "so")
    assert X[0, :6].tolist() == [good, film, SEP_ID, really, good, PAD_ID]
    assert X[1, :6].tolist() == [bad, film, SEP_ID, so, bad, PAD_ID]
    assert X[2, :4].tolist() == [SEP_ID, bad, bad, PAD_ID]  # the missing title keeps its place
    assert not X[3].any()  # no text at all: no separator either
    assert "sep" not in features.vocabulary  # the separator is not counted as a word


def test_literal_special_tokens_in_a_text_read_as_words():
    features = TextFeatures.fit(_frame(["keep [PAD] and [SEP] out", "keep out"] * 2), ["text"])
    X = features.apply(_frame(["keep [PAD] [SEP] [UNK] out"]))[0].astype(int)
    n_tokens = np.count_nonzero(X)
    assert n_tokens == 2 + 3 * 3  # "[", "pad", "]" ... as three words each
    assert PAD_ID not in X[:n_tokens].tolist()
    assert SEP_ID not in X.tolist()


def test_text_with_numeric_and_categorical_columns():
    rng = np.random.default_rng(0)
    n_rows = 40
    frame = pd.DataFrame(
        {
            "review": rng.choice(["great phone", "awful battery life", "fine screen", None], n_rows),
            "price": rng.normal(300, 50, n_rows),
            "brand": rng.choice(["acme", "globex"], n_rows),
        }
    )
    frame.loc[3, "price"] = np.nan
    train, test = frame.iloc[:30], frame.iloc[30:]
    features = TextFeatures.fit(train, ["review"])
    table = TableFeatures.fit(train[["price", "brand"]])
    L = features.max_length
    assert L == 8
    assert features.input_columns == ["review", "price", "brand"]
    assert features.output_names == [*[f"token{index}" for index in range(L)], *table.output_names]
    assert table.output_names == ["price", "brand=acme", "brand=globex"]
    assert features.input_shape == (L + 3,)
    assert features.text_input == TextInput(
        L,
        features.vocab_size,
        3,
        vocabulary=features.vocabulary,
        document_frequency=features.document_frequency,
        documents=30,
    )
    # Extra columns (a target) and another column order do not matter.
    X = features.apply(test.assign(label="x")[["label", "brand", "price", "review"]])
    np.testing.assert_array_equal(X[:, L:], table.apply(test))
    assert abs(float(features.apply(train)[:, L].mean())) < 1e-6  # standardized on the training rows
    great, phone = _ids(features, "great", "phone")
    rows = np.flatnonzero(test["review"].to_numpy() == "great phone")
    assert len(rows) > 0
    assert X[rows, :3].tolist() == [[great, phone, PAD_ID]] * len(rows)


def test_apply_names_missing_columns():
    frame = pd.DataFrame({"review": ["nice one", "bad one"] * 2, "stars": [5, 1, 4, 2]})
    features = TextFeatures.fit(frame, ["review"])
    with pytest.raises(DataError, match=r"lacks column\(s\) 'review'"):
        features.apply(frame[["stars"]])
    with pytest.raises(DataError, match=r"lacks column\(s\) 'stars'"):
        features.apply(frame[["review"]])


def test_fit_validates_columns_and_options():
    frame = _frame(["a b c", "b c d"])
    with pytest.raises(DataError, match=r"'txt' not in the data.*Did you mean 'text'"):
        TextFeatures.fit(frame, ["txt"])
    with pytest.raises(SpecError, match="unknown tokenizer 'sentencepiece'"):
        TextFeatures.fit(frame, ["text"], tokenizer="sentencepiece")
    with pytest.raises(SpecError, match="vocab_size must be in"):
        TextFeatures.fit(frame, ["text"], vocab_size=3)
    with pytest.raises(SpecError, match="max_length must be at least 1"):
        TextFeatures.fit(frame, ["text"], max_length=0)


def _texts_of_lengths(lengths: list[int]) -> pd.DataFrame:
    return _frame([" ".join(["word"] * length) for length in lengths])


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        (list(range(1, 101)), 96),  # 95th percentile 95.05 → 96
        (list(range(1, 11)) * 10, 16),  # 95th percentile 10 → 16
        ([1, 2, 3] * 10, 8),  # at least 8
        ([700] * 10, 512),  # at most 512
    ],
)
def test_max_length_is_chosen_from_the_training_texts(lengths, expected):
    features = TextFeatures.fit(_texts_of_lengths(lengths), ["text"])
    assert features.max_length == expected
    assert features.input_shape == (expected,)
    assert features.chosen == ("vocab_size", "max_length")
    assert f"max length {expected} tokens (the 95th percentile" in features.describe()
    assert features.truncated_share == pytest.approx(np.mean(np.asarray(lengths) > expected))


def test_explicit_max_length_and_vocab_size_are_kept():
    features = TextFeatures.fit(_texts_of_lengths(list(range(1, 101))), ["text"], max_length=5, vocab_size=50)
    assert features.max_length == 5
    assert features.vocab_size == 4  # asked for at most 50: the data has one word
    assert features.chosen == ()
    assert features.truncated_share == 0.95


def test_lowercase_and_unicode_normalization():
    texts = ["Apple apple ﬁne", "APPLE Fine naïve naïve"]
    lowered = TextFeatures.fit(_frame(texts), ["text"], min_frequency=1)
    assert lowered.vocabulary[3:5] == ("apple", "fine")  # NFKC turns the ligature "ﬁ" into "fi"
    assert "naïve" in lowered.vocabulary
    cased = TextFeatures.fit(_frame(texts), ["text"], min_frequency=1, lowercase=False)
    assert {"Apple", "apple", "APPLE"} <= set(cased.vocabulary)


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trips_through_json(kind):
    frame = pd.DataFrame({"text": ["one two three", "two three four five", "three", None] * 3})
    features = TextFeatures.fit(frame, ["text"], tokenizer=kind, min_frequency=1)
    state = features.to_state()
    assert state["type"] == "text"
    assert state["table"] is None
    rebuilt = TextFeatures.from_state(json.loads(json.dumps(state)))
    probe = pd.DataFrame({"text": ["four three two one zero", "", "five " * 30]})
    np.testing.assert_array_equal(rebuilt.apply(probe), features.apply(probe))
    assert rebuilt == features
    assert rebuilt.vocabulary == features.vocabulary
    assert rebuilt.describe() == features.describe()


def test_state_with_a_table_part_round_trips():
    frame = pd.DataFrame(
        {"note": ["late again", "on time", "late", "early"] * 3, "hours": np.arange(12.0), "day": ["mo"] * 12}
    )
    features = TextFeatures.fit(frame, ["note"])
    state = features.to_state()
    assert state["table"]["type"] == "table"
    document = json.dumps(state, default=lambda value: value.tolist())  # the table keeps numpy arrays
    rebuilt = TextFeatures.from_state(json.loads(document))
    np.testing.assert_array_equal(rebuilt.apply(frame), features.apply(frame))
    assert rebuilt.input_columns == ["note", "hours", "day"]
    bad = {**state, "vocab_size": state["vocab_size"] + 1}
    with pytest.raises(DataError, match="export the model again"):
        TextFeatures.from_state(bad)
