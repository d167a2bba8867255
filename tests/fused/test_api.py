"""The public API of tunelab.fused is what __all__ says."""

from __future__ import annotations

import tunelab.fused as fused


def test_all_names_exist_and_every_public_name_is_listed():
    assert sorted(fused.__all__) == fused.__all__
    for name in fused.__all__:
        assert hasattr(fused, name), name
    public = {name for name in vars(fused) if not name.startswith("_")}
    assert public == set(fused.__all__)
