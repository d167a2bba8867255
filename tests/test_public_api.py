"""`__all__` is the public API: every name in it exists, and every subpackage curates one."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "tunelab",
    "tunelab.clock",
    "tunelab.data",
    "tunelab.errors",
    "tunelab.execute",
    "tunelab.export",
    "tunelab.layout",
    "tunelab.fused",
    "tunelab.models",
    "tunelab.report",
    "tunelab.search",
    "tunelab.storage",
    "tunelab.train",
    "tunelab.tune",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_honest(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
