"""The public API of tunelab.data is exactly its curated __all__."""

from __future__ import annotations

import inspect

import tunelab.data


def test_all_names_exist_and_are_documented():
    for name in tunelab.data.__all__:
        value = getattr(tunelab.data, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"{name} has no docstring"


def test_every_public_attribute_is_listed_in_all():
    public = {
        name
        for name, value in vars(tunelab.data).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("tunelab.data")
    }
    assert public <= set(tunelab.data.__all__)
