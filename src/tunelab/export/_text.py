"""Exceptions from torch and numpy, shortened to fit in one of tunelab's error messages."""

from __future__ import annotations

__all__ = ["brief"]


def brief(error: BaseException, *, limit: int = 300) -> str:
    """An exception's message on one line, cut at ``limit`` characters."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
