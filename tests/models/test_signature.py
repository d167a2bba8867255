"""structure_signature: equal exactly when two specs build the same layers, so they can share a population."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import nn

from tunelab.models import CNNSpec, CustomSpec, MLPSpec, RNNSpec, build_model, structure_signature

# Fields a fused population varies per member, and the structural fields, each over a small domain.
PER_MEMBER = {
    "dropout": st.sampled_from([0.0, 0.1, 0.5]),
    "init": st.sampled_from(["default", "he_normal", "orthogonal"]),
    "init_gain": st.sampled_from([1.0, 2.0]),
}
MLP_FIELDS = {
    "hidden": st.sampled_from([[], [4], [4, 4], [6]]),
    "activation": st.sampled_from(["relu", "tanh"]),
    "batch_norm": st.booleans(),
    **PER_MEMBER,
}
CNN_FIELDS = {
    "channels": st.sampled_from([[2], [2, 3]]),
    "kernel_size": st.sampled_from([1, 3]),
    "pool": st.sampled_from(["max", "avg", "none"]),
    "dense": st.sampled_from([[], [4]]),
    "global_pool": st.booleans(),
    "activation": st.sampled_from(["relu", "silu"]),
    "batch_norm": st.booleans(),
    **PER_MEMBER,
}
mlp_specs = st.builds(MLPSpec, **MLP_FIELDS)
cnn_specs = st.builds(CNNSpec, **CNN_FIELDS)


@st.composite
def spec_pairs(draw):
    """A spec and a variant of it with a random subset of its fields redrawn (often only per-member ones)."""
    cls, fields = draw(st.sampled_from([(MLPSpec, MLP_FIELDS), (CNNSpec, CNN_FIELDS)]))
    first = draw(st.builds(cls, **fields))
    redrawn = st.sampled_from([PER_MEMBER, fields])
    update = draw(st.fixed_dictionaries({}, optional=draw(redrawn)))
    return first, cls(**(first.model_dump() | update))


def layers(spec) -> list[tuple]:
    """Each leaf module's type and parameter shapes, in order: what a layer-by-layer converter sees."""
    shape = (5,) if spec.type == "mlp" else (1, 4, 4)
    model = build_model(spec, input_shape=shape, output_dim=2, seed=0)
    return [
        (type(m).__name__, [(n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False)])
        for m in model.modules()
        if not isinstance(m, nn.Sequential)
    ]


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(pair=spec_pairs())
def test_equal_signature_iff_equal_layers(pair):
    first, second = pair
    same_signature = structure_signature(first) == structure_signature(second)
    event(f"same signature: {same_signature}")
    assert same_signature == (layers(first) == layers(second))


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(spec=st.one_of(mlp_specs, cnn_specs), dropout=st.floats(0.01, 0.9), gain=st.floats(0.1, 3.0))
def test_per_member_fields_keep_the_signature(spec, dropout, gain):
    changed = spec.model_copy(update={"init": "xavier_normal", "init_gain": gain, "dropout": dropout})
    same = structure_signature(spec) == structure_signature(changed)
    # switching dropout on adds Dropout modules, another structure, except to a linear model (no hidden block)
    adds_dropout = spec.dropout == 0 and not (isinstance(spec, MLPSpec) and not spec.hidden)
    assert same == (not adds_dropout)


def test_signature_is_hashable_and_readable():
    signature = structure_signature(MLPSpec(hidden=[8, 4]))
    assert {signature: 1}[structure_signature(MLPSpec(hidden=[8, 4], dropout=0.0, init="he_normal"))] == 1
    assert dict(signature)["hidden"] == (8, 4)
    assert not {"dropout", "init", "init_gain"} & dict(signature).keys()


def test_rnn_signature():
    base = RNNSpec(hidden_size=8, n_layers=2, dropout=0.1)
    assert structure_signature(base) == structure_signature(
        base.model_copy(update={"dropout": 0.4, "init": "orthogonal", "init_gain": 0.5})
    )
    for change in (
        {"cell": "gru"},
        {"hidden_size": 9},
        {"n_layers": 3},
        {"bidirectional": True},
        {"pooling": "mean"},
    ):
        assert structure_signature(base) != structure_signature(base.model_copy(update=change)), change


def test_custom_signature_is_the_whole_spec():
    spec = CustomSpec(
        factory="pkg.mod:make", kwargs={"width": 8, "layers": [1, 2], "extra": {"a": 1, "b": 2}}
    )
    reordered = CustomSpec(
        factory="pkg.mod:make", kwargs={"extra": {"b": 2, "a": 1}, "layers": [1, 2], "width": 8}
    )
    assert structure_signature(spec) == structure_signature(reordered)
    hash(structure_signature(spec))
    assert structure_signature(spec) != structure_signature(
        CustomSpec(factory="pkg.mod:make", kwargs={"width": 9, "layers": [1, 2], "extra": {"a": 1, "b": 2}})
    )
    assert structure_signature(spec) != structure_signature(
        spec.model_copy(update={"factory": "pkg.mod:other"})
    )


@pytest.mark.parametrize("other", [CNNSpec(), RNNSpec()])
def test_families_never_share_a_signature(other):
    assert structure_signature(MLPSpec()) != structure_signature(other)
