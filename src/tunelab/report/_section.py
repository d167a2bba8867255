"""``Section``: one titled part of the HTML report."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Section"]


@dataclass(frozen=True)
class Section:
    key: str  # the anchor: id="sec-<key>"
    title: str
    body: str  # HTML
