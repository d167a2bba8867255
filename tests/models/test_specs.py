"""Spec validation: defaults, aliases, and a helpful error for every malformed field."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

import tunelab.models
from tunelab.models import (
    ACTIVATIONS,
    INIT_SCHEMES,
    CNNSpec,
    CustomSpec,
    MLPSpec,
    ModelSpec,
    RNNSpec,
    parse_model_spec,
)

ADAPTER: TypeAdapter[ModelSpec] = TypeAdapter(ModelSpec)


def test_all_is_honest():
    assert sorted(tunelab.models.__all__) == sorted(set(tunelab.models.__all__))
    for name in tunelab.models.__all__:
        assert hasattr(tunelab.models, name), name


def test_defaults_match_documented_values():
    assert MLPSpec().hidden == [128, 64]
    cnn = CNNSpec()
    assert (cnn.channels, cnn.kernel_size, cnn.pool, cnn.dense, cnn.global_pool) == (
        [32, 64],
        3,
        "max",
        [128],
        False,
    )
    rnn = RNNSpec()
    assert (rnn.cell, rnn.n_layers, rnn.bidirectional, rnn.pooling) == ("lstm", 1, False, "last")


@pytest.mark.parametrize(
    ("data", "expected_type"),
    [
        ({"type": "mlp"}, MLPSpec),
        ({"type": "cnn"}, CNNSpec),
        ({"type": "rnn"}, RNNSpec),
        ({"type": "custom", "factory": "pkg.mod:make"}, CustomSpec),
    ],
)
def test_discriminator_picks_the_family(data, expected_type):
    assert type(parse_model_spec(data)) is expected_type


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_shorthand_type(cell):
    spec = ADAPTER.validate_python({"type": cell, "hidden_size": 8})
    assert isinstance(spec, RNNSpec)
    assert (spec.type, spec.cell, spec.hidden_size) == ("rnn", cell, 8)
    # the shorthand also works on the class itself, and a consistent cell is fine
    assert RNNSpec.model_validate({"type": cell, "cell": cell}).cell == cell


def test_cell_shorthand_conflicting_cell_is_rejected():
    with pytest.raises(ValidationError, match="shorthand for type 'rnn' with cell 'gru'"):
        parse_model_spec({"type": "gru", "cell": "lstm"})


@pytest.mark.parametrize(
    ("alias", "name"), [("kaiming_normal", "he_normal"), ("kaiming_uniform", "he_uniform")]
)
def test_kaiming_aliases_are_stored_as_he(alias, name):
    assert MLPSpec(init=alias).init == name
    assert RNNSpec(init=alias).init == name


def test_unknown_type_lists_the_families():
    with pytest.raises(ValidationError, match=r"'mlp', 'cnn', 'rnn'.*'custom'"):
        parse_model_spec({"type": "transformer"})


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValidationError) as info:
        MLPSpec(activation="relux")
    message = str(info.value)
    assert all(f"'{name}'" in message for name in ACTIVATIONS)


def test_unknown_init_lists_the_valid_ones():
    with pytest.raises(ValidationError) as info:
        CNNSpec(init="lecun")
    assert all(f"'{name}'" in str(info.value) for name in INIT_SCHEMES)


@pytest.mark.parametrize(
    ("cls", "fields", "fragment"),
    [
        (MLPSpec, {"dropout": 1.0}, "less than 1"),
        (MLPSpec, {"dropout": -0.1}, "greater than or equal to 0"),
        (MLPSpec, {"hidden": [64, 0]}, "greater than or equal to 1"),
        (MLPSpec, {"init_gain": 0.0}, "greater than 0"),
        (MLPSpec, {"init_gain": float("inf")}, "finite"),
        (MLPSpec, {"width": 3}, "Extra inputs are not permitted"),
        (CNNSpec, {"kernel_size": 4}, "kernel_size must be odd.*Use 3 or 5"),
        (CNNSpec, {"channels": []}, "at least 1 item"),
        (CNNSpec, {"dense": [0]}, "greater than or equal to 1"),
        (CNNSpec, {"pool": "min"}, "'max', 'avg' or 'none'"),
        (RNNSpec, {"cell": "transformer"}, "'rnn', 'lstm' or 'gru'"),
        (RNNSpec, {"hidden_size": 0}, "greater than or equal to 1"),
        (RNNSpec, {"dropout": 0.2}, "n_layers >= 2"),
        (RNNSpec, {"pooling": "max"}, "'last' or 'mean'"),
        (CustomSpec, {"factory": "pkg.mod.make"}, "package.module:function"),
        (CustomSpec, {"factory": "pkg.mod:"}, "package.module:function"),
        (CustomSpec, {"factory": "pkg mod:make"}, "package.module:function"),
        (CustomSpec, {"factory": "m:f", "kwargs": {"output_dim": 3}}, "passes input_shape and output_dim"),
    ],
)
def test_bad_fields_are_rejected_with_a_helpful_message(cls, fields, fragment):
    with pytest.raises(ValidationError, match=fragment):
        cls(**fields)


def test_rnn_dropout_with_stacked_layers_is_fine():
    assert RNNSpec(dropout=0.3, n_layers=2).dropout == 0.3


def test_empty_hidden_is_a_linear_model_spec():
    assert MLPSpec(hidden=[]).hidden == []
