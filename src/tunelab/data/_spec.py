"""The data part of an experiment spec: where the data comes from, what to predict, how to split it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DataSpec", "SplitSpec", "TextOptions"]

SourceFormat = Literal["auto", "csv", "parquet", "npz", "idx", "image_folder", "text_folder", "builtin"]
TaskName = Literal["auto", "classification", "regression", "forecasting"]
KindName = Literal["auto", "table", "image", "sequence"]
SplitMethod = Literal["holdout", "kfold", "stratified_kfold", "timeseries"]


class SplitSpec(BaseModel):
    """How rows are divided into train / validation / test.

    The test part is set aside first (the dataset's own test split when it has one, else ``test_fraction`` of
    the rows); validation is then taken from the rest. ``fold=None`` in :func:`prepare_data` gives one
    validation part of ``val_fraction`` made the method's way (stratified, or chronological for
    ``timeseries``); ``fold=i`` gives the i-th of ``n_folds`` folds.
    """

    model_config = ConfigDict(extra="forbid")

    method: SplitMethod = "holdout"
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="share of all rows held out for the test"
    )
    val_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="share of the non-test rows for validation"
    )
    n_folds: int = Field(
        default=5, ge=2, le=100, description="folds for kfold / stratified_kfold / timeseries"
    )
    # scikit-learn stratifies shuffled holdouts only: shuffle: false also means an unstratified holdout.
    # None: the method's own default (shuffled, except time series). An explicit value survives a round trip
    # through spec.yaml, so a dumped time-series spec loads again.
    shuffle: bool | None = Field(default=None, description="shuffle before splitting (never for time series)")

    @model_validator(mode="after")
    def _timeseries_keeps_order(self) -> SplitSpec:
        if self.method == "timeseries" and self.shuffle is True:
            raise ValueError(
                "split.method 'timeseries' keeps rows in time order, so shuffle: true cannot apply; "
                "remove 'shuffle' or set it to false"
            )
        return self


class TextOptions(BaseModel):
    """How free-text columns become token ids (fitted on the training part only).

    ``tokenizer``: ``word`` (words and punctuation), ``wordpiece`` or ``bpe`` (sub-words: no unknown words),
    trained with Hugging Face ``tokenizers``. ``vocab_size`` (None: every token seen ``min_frequency`` times,
    at most 30,000 words, or 8,000 sub-words) and ``max_length`` (None: the 95th percentile of the training
    texts' token counts) are chosen from the data unless given; a model may keep fewer of the most frequent
    tokens (``model.vocab_size``).
    """

    model_config = ConfigDict(extra="forbid")

    tokenizer: Literal["word", "wordpiece", "bpe"] = "word"
    vocab_size: int | None = Field(default=None, ge=16, le=1_000_000)
    max_length: int | None = Field(default=None, ge=1, le=100_000)
    min_frequency: int = Field(default=2, ge=1)
    lowercase: bool = True


class DataSpec(BaseModel):
    """Where the data comes from and how to turn it into train / validation / test tensors.

    ``source`` is a path (CSV, Parquet, ``.npz``, an IDX directory, an image folder, a folder of ``.txt``
    files per class) or a built-in name (``digits``, ``iris``, ``wine``, ``breast_cancer``, ``diabetes``,
    ``fashion-mnist``, ``fortunes``). Free-text columns of a table are found by their values (several words
    each, mostly distinct) or listed in ``text_columns``; ``text`` says how they are tokenized.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    format: SourceFormat = "auto"
    # Tables: the column to predict, columns to leave out, and (for series) the column that orders rows.
    target: str | None = Field(default=None, min_length=1)
    drop_columns: list[str] = Field(default_factory=list)
    time_column: str | None = Field(
        default=None, min_length=1, description="sort rows by this column (time series)"
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="CSV field separator")
    encoding: str = Field(default="utf-8", min_length=1, description="text encoding of CSV and .txt files")
    text_columns: list[str] | None = Field(
        default=None, description="columns to read as free text (None: found by their values)"
    )
    text: TextOptions = Field(default_factory=TextOptions)
    task: TaskName = "auto"
    # npz arrays: the keys of X and y; 3-D X is ambiguous (sequences or grayscale images), `kind` settles it.
    x_key: str = Field(default="X", min_length=1)
    y_key: str = Field(default="y", min_length=1)
    kind: KindName = "auto"
    split: SplitSpec = Field(default_factory=SplitSpec)
    # Forecasting: `window` past rows predict the next `horizon` target values.
    window: int = Field(default=24, ge=1, le=100_000)
    horizon: int = Field(default=1, ge=1, le=100_000)
    season: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="seasonal period in rows (12: monthly data, yearly cycle); None: from the time column",
    )
    image_size: tuple[int, int] | None = Field(
        default=None, description="(height, width) to resize folder images to"
    )
    max_rows: int | None = Field(
        default=None, ge=10, description="deterministic (stratified) subsample, quick runs"
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_size(cls, value: object) -> object:
        # `image_size: 32` is the common way to ask for 32x32.
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"image_size must be positive (height, width), got {value}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"encoding '{value}' is not a text encoding Python knows; use e.g. 'utf-8', 'latin-1', "
                "'cp1252' or 'utf-16'"
            ) from None
        return value

    @field_validator("drop_columns")
    @classmethod
    def _unique_drops(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"drop_columns lists {repeated} more than once; list each column once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        for option, name in (("target", self.target), ("time_column", self.time_column)):
            if name is not None and name in self.drop_columns:
                raise ValueError(f"{option} '{name}' is also in drop_columns; remove it from drop_columns")
        if self.time_column is not None and self.time_column == self.target:
            raise ValueError(f"'{self.target}' cannot be both the target and the time_column")
        if self.target is not None and self.text_columns and self.target in self.text_columns:
            raise ValueError(
                f"target '{self.target}' is also in text_columns; a text target cannot be predicted "
                "(classification needs labels, regression numbers). Remove it from text_columns."
            )
        if self.task == "forecasting" and self.text_columns:
            raise ValueError("forecasting windows read numeric columns only; remove text_columns")
        if self.task == "forecasting" and self.split.shuffle is True:
            raise ValueError(
                "forecasting splits keep rows in time order; remove split.shuffle or set it to false"
            )
        if self.task == "forecasting" and self.target is None:
            raise ValueError("task 'forecasting' needs `target`: the column of the series to forecast")
        if self.task == "forecasting" and self.split.method in ("kfold", "stratified_kfold"):
            raise ValueError(
                f"split.method '{self.split.method}' would train on the future of validation rows; "
                "forecasting needs method 'holdout' (chronological) or 'timeseries'"
            )
        return self
