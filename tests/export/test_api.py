"""`tunelab.export.__all__` is honest and documented."""

from __future__ import annotations

import tunelab.export


def test_all_names_exist_and_are_documented():
    assert len(set(tunelab.export.__all__)) == len(tunelab.export.__all__)
    for name in tunelab.export.__all__:
        value = getattr(tunelab.export, name)
        if callable(value):
            assert value.__doc__, f"{name} has no docstring"
