"""What a model's input holds beyond its shape: the layout of text samples.

A text sample is one float32 row ``[L + F]``: ``L`` token ids (0 is padding, 1 an unknown token; ids are
exact in float32 below 2**24), then ``F`` table features from the table's other columns. ``tunelab.data``
produces it (``Preprocessor.text_input``), ``tunelab.models`` builds text models from it; both import it from
here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PAD_ID", "UNKNOWN_ID", "TextInput"]

PAD_ID = 0
UNKNOWN_ID = 1


@dataclass(frozen=True)
class TextInput:
    """The layout of text samples ``[length + features]``.

    ``length``: token ids per sample (padded with ``PAD_ID``, longer texts cut); ``vocab_size``: ids are in
    ``[0, vocab_size)``, the most frequent tokens first after the special ones (``PAD_ID``, ``UNKNOWN_ID``);
    ``features``: the table features after the ids; ``vocabulary``: the token of each id (for pretrained
    vectors), empty when not at hand; ``document_frequency``: in how many of the ``documents`` training texts
    each id occurs (for the learned token weights of ``pooling="weighted"``, which start at each id's inverse
    document frequency), empty when not at hand.
    """

    length: int
    vocab_size: int
    features: int = 0
    vocabulary: tuple[str, ...] = field(default=(), repr=False)
    document_frequency: tuple[int, ...] = field(default=(), repr=False)
    documents: int = 0

    def __post_init__(self) -> None:
        if self.length < 1 or self.vocab_size < 2 or self.features < 0:
            raise ValueError(
                "a text input needs length >= 1, vocab_size >= 2 and features >= 0; got "
                f"length={self.length}, vocab_size={self.vocab_size}, features={self.features}"
            )
        if self.vocabulary and len(self.vocabulary) != self.vocab_size:
            raise ValueError(
                f"vocabulary lists {len(self.vocabulary)} tokens but vocab_size is {self.vocab_size}"
            )
        if self.document_frequency and len(self.document_frequency) != self.vocab_size:
            raise ValueError(
                f"document_frequency has {len(self.document_frequency)} counts but vocab_size is "
                f"{self.vocab_size}"
            )

    def inverse_document_frequency(self) -> tuple[float, ...]:
        """Each id's smoothed inverse document frequency, ``1 + ln((1 + documents) / (1 + df))`` (scikit-
        learn's ``TfidfVectorizer`` formula); all ones when the frequencies are not at hand."""
        if not self.document_frequency:
            return (1.0,) * self.vocab_size
        return tuple(1.0 + math.log((1 + self.documents) / (1 + df)) for df in self.document_frequency)

    @property
    def width(self) -> int:
        """Values per sample: ``length + features``."""
        return self.length + self.features
