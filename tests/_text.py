"""Synthetic topic texts for the text tests: three topics, each with its own words and shared filler words."""

from __future__ import annotations

import numpy as np
import pandas as pd

WORDS = {
    "tech": ["compiler", "kernel", "bug", "code", "program", "server", "disk", "byte", "network", "debug"],
    "food": ["bread", "butter", "cheese", "soup", "sugar", "bake", "salt", "dinner", "coffee", "apple"],
    "law": ["court", "judge", "lawyer", "trial", "jury", "verdict", "appeal", "statute", "crime", "sentence"],
}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "it", "that", "was"]


def topic_texts(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` sentences of 6-12 words (column ``review``), each from one topic's words and the filler words,
    and their topics (column ``label``)."""
    rng = np.random.default_rng(seed)
    topics = rng.choice(sorted(WORDS), size=n)
    texts = [" ".join(rng.choice(WORDS[topic] + FILLER, size=int(rng.integers(6, 13)))) for topic in topics]
    return pd.DataFrame({"review": texts, "label": topics})
