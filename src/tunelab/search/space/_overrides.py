"""Merge a trial's nested override dict into an experiment spec mapping."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["merge_overrides"]


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``overrides`` merged in; neither argument is changed.

    Mappings merge key by key, recursively; any other value (numbers, strings, lists) replaces the base value.
    Keys that the base lacks are added: the spec's own validation (``extra="forbid"``) catches misspelled
    paths after the merge, with the full list of valid keys.

    >>> merge_overrides({"train": {"lr": 0.1, "epochs": 5}}, {"train": {"lr": 0.01}})
    {'train': {'lr': 0.01, 'epochs': 5}}
    """
    merged = {key: copy.deepcopy(value) for key, value in base.items()}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
