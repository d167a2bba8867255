"""Text features: text columns → token ids (a tokenizer trained on the training rows), then table features.

The tokenizer is a Hugging Face ``tokenizers`` one (Rust, fast batch encoding), saved as its own JSON string,
so a state needs no pickle. Ids follow ``tunelab.inputs.TextInput``: ``[PAD]`` 0, ``[UNK]`` 1, ``[SEP]`` 2
(between the texts of several columns), then the other tokens, most frequent in the training rows first.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from tunelab.data._hints import did_you_mean, listing
from tunelab.data._table_features import TableFeatures
from tunelab.errors import DataError, SpecError
from tunelab.inputs import PAD_ID, UNKNOWN_ID, TextInput

__all__ = ["SPECIAL_TOKENS", "TOKENIZER_KINDS", "TextFeatures", "TokenizerKind", "clean_text", "joined_texts"]

TokenizerKind = Literal["word", "wordpiece", "bpe"]
TOKENIZER_KINDS: tuple[str, ...] = get_args(TokenizerKind)
PAD, UNKNOWN, SEP = "[PAD]", "[UNK]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNKNOWN, SEP)  # ids 0, 1, 2
SEP_ID = 2

WORD_VOCAB_CAP = 30_000  # default "word" vocabulary: every token seen min_frequency times, at most this many
SUBWORD_VOCAB_SIZE = 8_000  # default "wordpiece" / "bpe" vocabulary (smaller when the data has fewer merges)
LENGTH_PERCENTILE = 95  # default max_length: this percentile of the training texts' token counts, ...
LENGTH_MULTIPLE, MIN_LENGTH, MAX_LENGTH = 8, 8, 512  # ... rounded up to a multiple of 8, within [8, 512]


@dataclass(frozen=True)
class TextFeatures:
    """Raw rows → float32 ``[N, max_length + F]``: the token ids of the text columns (joined with ``[SEP]``,
    cut to ``max_length``, right-padded with ``PAD_ID``), then ``TableFeatures`` of the other columns.

    Example::

        features = TextFeatures.fit(train[["review", "stars"]], ["review"])
        X = features.apply(test)  # [N, features.max_length + 1]
    """

    text_columns: list[str]
    tokenizer: Tokenizer = field(compare=False, repr=False)  # truncation set to max_length
    kind: TokenizerKind
    max_length: int
    vocab_size: int  # ids are in [0, vocab_size), special tokens included
    min_frequency: int
    lowercase: bool
    table: TableFeatures | None  # the other columns; None when the frame has only text columns
    truncated_share: float = 0.0  # share of the training texts longer than max_length
    # In how many training texts each id occurs (id order), and how many texts there were.
    document_frequency: tuple[int, ...] = field(default=(), repr=False)
    documents: int = 0
    chosen: tuple[str, ...] = ()  # the settings chosen from the data: "vocab_size", "max_length"

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        text_columns: list[str],
        *,
        tokenizer: TokenizerKind = "word",
        vocab_size: int | None = None,
        max_length: int | None = None,
        min_frequency: int = 2,
        lowercase: bool = True,
    ) -> TextFeatures:
        """Train the tokenizer on the training rows ``frame`` (feature columns only, not the target).

        ``vocab_size`` (special tokens included) defaults to every "word" token seen ``min_frequency`` times
        (at most 30,000), or 8,000 "wordpiece" / "bpe" tokens; ``max_length`` to the 95th percentile of the
        training texts' token counts, rounded up to a multiple of 8 within [8, 512].
        """
        _check_options(tokenizer, vocab_size, max_length, min_frequency)
        text_columns = [str(name) for name in text_columns]
        if not text_columns:
            raise DataError("no text columns were given. Fix: name at least one column that holds text.")
        _check_columns(frame, text_columns, "text column")
        columns = [_column_texts(frame[name]) for name in text_columns]
        texts = _joined(columns)
        if not any(texts):
            raise DataError(
                f"the text column(s) {listing(text_columns)} are empty in all {len(frame)} training rows. "
                "Fix: check the column names, or fill in texts."
            )
        # The trainer sees each column's texts on their own: a literal "[SEP]" would count as words there.
        parts = [text for column in columns for text in column if text]
        requested = vocab_size
        if vocab_size is None:
            vocab_size = WORD_VOCAB_CAP if tokenizer == "word" else SUBWORD_VOCAB_SIZE
        trained = _train(parts, tokenizer, vocab_size, min_frequency, lowercase)
        ids = [encoding.ids for encoding in trained.encode_batch(texts)]
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        counts = np.bincount(
            np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64),
            minlength=trained.get_vocab_size(),
        )
        in_texts = np.bincount(
            np.fromiter(itertools.chain.from_iterable(set(row) for row in ids), dtype=np.int64),
            minlength=trained.get_vocab_size(),
        )
        old_vocab = trained.get_vocab()
        trained = _by_frequency(trained, counts)
        document_frequency = np.zeros(trained.get_vocab_size(), dtype=np.int64)
        for token, new in trained.get_vocab().items():
            document_frequency[new] = in_texts[old_vocab[token]]
        if max_length is None:
            percentile = float(np.percentile(lengths, LENGTH_PERCENTILE))
            rounded = int(np.ceil(percentile / LENGTH_MULTIPLE)) * LENGTH_MULTIPLE
            length = int(np.clip(rounded, MIN_LENGTH, MAX_LENGTH))
        else:
            length = max_length
        _set_length(trained, length)
        others = [name for name in frame.columns if str(name) not in set(text_columns)]
        return cls(
            text_columns=text_columns,
            tokenizer=trained,
            kind=tokenizer,
            max_length=length,
            vocab_size=trained.get_vocab_size(),
            min_frequency=min_frequency,
            lowercase=lowercase,
            table=TableFeatures.fit(frame[others]) if others else None,
            truncated_share=float(np.mean(lengths > length)),
            document_frequency=tuple(int(df) for df in document_frequency),
            documents=len(texts),
            chosen=tuple(
                name
                for name, given in (("vocab_size", requested), ("max_length", max_length))
                if given is None
            ),
        )

    @property
    def input_columns(self) -> list[str]:
        return [*self.text_columns, *(self.table.input_columns if self.table else [])]

    @property
    def output_names(self) -> list[str]:
        """``token0 .. token{max_length - 1}``, then the table features' names."""
        tokens = [f"token{index}" for index in range(self.max_length)]
        return [*tokens, *(self.table.output_names if self.table else [])]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.output_names),)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The token of each id, in id order."""
        by_id = sorted(self.tokenizer.get_vocab().items(), key=lambda item: item[1])
        return tuple(token for token, _ in by_id)

    @property
    def text_input(self) -> TextInput:
        features = len(self.table.output_names) if self.table else 0
        return TextInput(
            self.max_length,
            self.vocab_size,
            features,
            vocabulary=self.vocabulary,
            document_frequency=self.document_frequency,
            documents=self.documents,
        )

    def describe(self) -> str:
        """One line for a notice: tokenizer, vocabulary, length, and how many training texts are cut."""
        vocabulary = f"{self.vocab_size:,} token ids"
        if "vocab_size" in self.chosen and self.kind == "word":
            vocabulary += f" (every token seen at least {self.min_frequency} time(s) in the training rows)"
        length = f"max length {self.max_length} tokens"
        if "max_length" in self.chosen:
            length += f" (the {LENGTH_PERCENTILE}th percentile of the training texts)"
        return (
            f"text column(s) {listing(self.text_columns)}: {self.kind} tokenizer, {vocabulary}, {length}; "
            f"{self.truncated_share:.1%} of the training texts are cut"
        )

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        """Transform raw rows (extra columns such as the target are ignored) into float32
        ``[N, max_length + F]``; an empty or missing text gives all ``PAD_ID``."""
        _check_columns(frame, self.input_columns, "column", trained=True)
        encodings = self.tokenizer.encode_batch(joined_texts(frame, self.text_columns))
        rows = [encoding.ids for encoding in encodings]  # cut to max_length by the tokenizer
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float32, count=int(lengths.sum()))
        # Padded here, not by the tokenizer: converting its padded lists to numbers took 3x as long.
        ids = np.full((len(rows), self.max_length), PAD_ID, dtype=np.float32)
        ids[np.arange(self.max_length) < lengths[:, None]] = flat
        if self.table is None:
            return ids
        return np.concatenate([ids, self.table.apply(frame)], axis=1)

    def to_state(self) -> dict[str, Any]:
        """Plain values; the tokenizer as its JSON string; the table part's state (numpy arrays) or None."""
        return {
            "type": "text",
            "text_columns": list(self.text_columns),
            "tokenizer": self.kind,
            "tokenizer_json": self.tokenizer.to_str(),
            "max_length": self.max_length,
            "vocab_size": self.vocab_size,
            "min_frequency": self.min_frequency,
            "lowercase": self.lowercase,
            "truncated_share": self.truncated_share,
            "document_frequency": list(self.document_frequency),
            "documents": self.documents,
            "chosen": list(self.chosen),
            "table": self.table.to_state() if self.table else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextFeatures:
        tokenizer = Tokenizer.from_str(state["tokenizer_json"])
        max_length, vocab_size = int(state["max_length"]), int(state["vocab_size"])
        if tokenizer.get_vocab_size() != vocab_size:
            raise DataError(
                f"the text state's tokenizer has {tokenizer.get_vocab_size()} tokens but the state says "
                f"{vocab_size}; export the model again"
            )
        _set_length(tokenizer, max_length)
        kind = str(state["tokenizer"])
        if kind not in TOKENIZER_KINDS:
            raise DataError(f"unknown tokenizer {kind!r} in the text state; export the model again")
        return cls(
            text_columns=[str(name) for name in state["text_columns"]],
            tokenizer=tokenizer,
            kind=kind,  # type: ignore[arg-type]  # checked above
            max_length=max_length,
            vocab_size=vocab_size,
            min_frequency=int(state["min_frequency"]),
            lowercase=bool(state["lowercase"]),
            table=None if state.get("table") is None else TableFeatures.from_state(state["table"]),
            truncated_share=float(state.get("truncated_share", 0.0)),
            # Absent from states written before token weights: a loaded model has its weights already.
            document_frequency=tuple(int(df) for df in state.get("document_frequency", [])),
            documents=int(state.get("documents", 0)),
            chosen=tuple(str(name) for name in state.get("chosen", [])),
        )


def clean_text(text: str) -> str:
    """Resolve backspace overstriking (``x\\bx`` and ``_\\bx`` → ``x``), drop control characters, and collapse
    whitespace (newlines and tabs included) to single spaces. Other Unicode is kept as it is."""
    if "\b" in text:
        text = "\n".join(_overstrike(line) for line in text.split("\n"))
    return " ".join(_CONTROL.sub("", text).split())


def joined_texts(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Per row, the cleaned texts of ``columns`` joined with ``" [SEP] "``; ``""`` where all are missing or
    empty (one column missing in a row still takes its place between separators)."""
    return _joined([_column_texts(frame[name]) for name in columns])


def _joined(columns: list[list[str]]) -> list[str]:
    return [f" {SEP} ".join(row) if any(row) else "" for row in zip(*columns, strict=True)]


# Cc (C0, DEL, C1) except the whitespace ones, which the whitespace collapse turns into spaces.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def _overstrike(line: str) -> str:
    """A line as a printer shows it: a backspace steps back, the next character overstrikes; an underscore
    keeps the character it underlines."""
    cells: list[str] = []
    cursor = 0
    for char in line:
        if char == "\b":
            cursor = max(cursor - 1, 0)
            continue
        if cursor < len(cells):
            if char != "_":
                cells[cursor] = char
        else:
            cells.append(char)
        cursor += 1
    return "".join(cells)


def _column_texts(column: pd.Series) -> list[str]:
    """Cleaned texts, ``""`` for missing values; a literal special token in a text is lowercased so that it
    reads as words, not as padding or a separator."""
    texts = []
    for value in column:
        text = "" if _missing(value) else clean_text(str(value))
        if "[" in text:
            for token in SPECIAL_TOKENS:
                text = text.replace(token, token.lower())
        texts.append(text)
    return texts


def _missing(value: Any) -> bool:
    return bool(np.ndim(value) == 0 and pd.isna(value))


def _check_options(kind: str, vocab_size: int | None, max_length: int | None, min_frequency: int) -> None:
    if kind not in TOKENIZER_KINDS:
        raise SpecError(
            f"unknown tokenizer {kind!r}; expected one of {listing(TOKENIZER_KINDS)}."
            f"{did_you_mean(kind, TOKENIZER_KINDS)}"
        )
    if vocab_size is not None and not 4 <= vocab_size < 2**24:
        raise SpecError(
            f"vocab_size must be in [4, 2**24) (ids are exact in float32 below 2**24); got {vocab_size}. "
            "Fix: leave it out to size the vocabulary from the data."
        )
    if max_length is not None and max_length < 1:
        raise SpecError(f"max_length must be at least 1; got {max_length}. Fix: leave it out to choose it.")
    if min_frequency < 1:
        raise SpecError(f"min_frequency must be at least 1; got {min_frequency}")


def _check_columns(frame: pd.DataFrame, columns: list[str], what: str, *, trained: bool = False) -> None:
    missing = [name for name in columns if name not in frame.columns]
    if not missing:
        return
    if trained:
        raise DataError(
            f"the data lacks column(s) {listing(missing)} that the model was trained on. Expected "
            f"columns: {listing(columns)}. Fix: add them (empty values are allowed)."
        )
    hint = did_you_mean(missing[0], [str(name) for name in frame.columns])
    raise DataError(
        f"{what}(s) {listing(missing)} not in the data, which has {listing(map(str, frame.columns))}.{hint}"
    )


def _train(texts: list[str], kind: str, vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    """A tokenizer trained on ``texts``: NFKC (+ lowercase), split at whitespace and punctuation, then
    word-level, WordPiece or BPE (with ``</w>`` marking word ends); special tokens get ids 0, 1, 2."""
    special = list(SPECIAL_TOKENS)
    # An alphabet larger than the vocabulary would exceed vocab_size: keep the most frequent characters.
    alphabet = max(1, (vocab_size - len(special)) // 2)
    trainer: trainers.Trainer
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNKNOWN))
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special, show_progress=False
        )
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNKNOWN))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special,
            limit_alphabet=alphabet,
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNKNOWN, end_of_word_suffix="</w>"))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special,
            limit_alphabet=alphabet,
            end_of_word_suffix="</w>",
            show_progress=False,
        )
    steps = [normalizers.NFKC(), *([normalizers.Lowercase()] if lowercase else [])]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer)
    vocab = tokenizer.get_vocab()
    if [vocab.get(token) for token in SPECIAL_TOKENS] != [PAD_ID, UNKNOWN_ID, SEP_ID]:
        raise RuntimeError(f"the {kind} trainer did not give the special tokens ids 0, 1, 2: {vocab}")
    return tokenizer


def _by_frequency(tokenizer: Tokenizer, counts: np.ndarray) -> Tokenizer:
    """The tokenizer with its ids renumbered: special tokens first, then by ``counts`` (occurrences in the
    training texts, per old id) descending, ties in the trainer's order. The word-level trainer already
    orders by frequency (then alphabetically); WordPiece and BPE list their alphabet first, which this puts
    in its place, so that the first K ids are the K most frequent tokens for every kind."""
    document = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = document["model"]["vocab"]
    n_special = len(SPECIAL_TOKENS)

    def rank(token: str) -> tuple[int, int, int]:
        old = vocab[token]
        return (0, 0, old) if old < n_special else (1, -int(counts[old]), old)

    document["model"]["vocab"] = {token: new for new, token in enumerate(sorted(vocab, key=rank))}
    return Tokenizer.from_str(json.dumps(document))


def _set_length(tokenizer: Tokenizer, length: int) -> None:
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=length)
