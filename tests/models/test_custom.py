"""Users' factories: by import string and as callables, with every way they can go wrong."""

from __future__ import annotations

import functools
import sys

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from tunelab.errors import SpecError
from tunelab.models import CustomSpec, build_model

MODULE = "tunelab_models_test_factories"
SOURCE = """
import torch
from torch import nn

NOT_CALLABLE = 3


def make_mlp(input_shape, output_dim, width=8):
    layers = [nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, output_dim)]
    return nn.Sequential(nn.Flatten(), *layers)


def make_linear(n_in, n_out):
    return nn.Linear(n_in, n_out)


def make_from_kwargs(**kwargs):
    return nn.Linear(kwargs["input_shape"][0], kwargs["output_dim"])


def make_random(input_shape, output_dim):
    layer = nn.Linear(input_shape[0], output_dim)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(output_dim, input_shape[0]))  # draws from the global generator
    return layer


class Net(nn.Module):
    def __init__(self, input_shape, output_dim):
        super().__init__()
        self.body = nn.Linear(input_shape[0], output_dim)

    def forward(self, x):
        return self.body(x)


def returns_class(input_shape, output_dim):
    return nn.Linear


def returns_string(input_shape, output_dim):
    return "a model"


def raises(input_shape, output_dim):
    raise RuntimeError("boom: out of widgets")


def wrong_output_dim(input_shape, output_dim):
    return nn.Linear(input_shape[0], output_dim + 1)


def wrong_input_size(input_shape, output_dim):
    return nn.Linear(input_shape[0] + 1, output_dim)


def returns_tuple(input_shape, output_dim):
    class Pair(nn.Module):
        def forward(self, x):
            return x[:, :output_dim], x

    return Pair()
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A throwaway module of factories on sys.path; yields its import name."""
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    (tmp_path / "tunelab_models_test_broken_dep.py").write_text("import tunelab_no_such_dependency\n")
    (tmp_path / "tunelab_models_test_raises.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield MODULE
    for name in (MODULE, "tunelab_models_test_broken_dep", "tunelab_models_test_raises"):
        sys.modules.pop(name, None)


def build(spec, input_shape=(6,), output_dim=3, seed=0):
    return build_model(spec, input_shape=input_shape, output_dim=output_dim, seed=seed)


def test_factory_by_import_string_gets_data_arguments_and_kwargs(factories):
    model = build(CustomSpec(factory=f"{factories}:make_mlp", kwargs={"width": 11}))
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [11, 3]
    assert model(torch.randn(4, 6)).shape == (4, 3)


def test_factory_without_data_arguments_gets_only_kwargs(factories):
    model = build(CustomSpec(factory=f"{factories}:make_linear", kwargs={"n_in": 6, "n_out": 3}))
    assert (model.in_features, model.out_features) == (6, 3)


@pytest.mark.parametrize("name", ["make_from_kwargs", "Net"])
def test_var_keyword_factories_and_classes(factories, name):
    assert build(CustomSpec(factory=f"{factories}:{name}"))(torch.randn(2, 6)).shape == (2, 3)


def test_factory_is_seeded_and_leaves_the_global_rng_alone(factories):
    spec = CustomSpec(factory=f"{factories}:make_random")
    torch.manual_seed(0)
    rng_before = torch.get_rng_state()
    first, again, other = build(spec, seed=1), build(spec, seed=1), build(spec, seed=2)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(first.weight, again.weight)
    assert not torch.equal(first.weight, other.weight)


def test_python_callables():
    def make(input_shape, output_dim):
        return nn.Linear(input_shape[0], output_dim)

    assert build(make).out_features == 3
    assert build(functools.partial(nn.Linear, 6, 3)).in_features == 6  # no data arguments: called bare
    assert build(lambda **kw: nn.Linear(kw["input_shape"][0], kw["output_dim"])).in_features == 6


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        ("tunelab_no_such_module_xyz:make", r"no module named 'tunelab_no_such_module_xyz'.*PYTHONPATH"),
        ("tunelab_no_such_pkg_xyz.sub:make", r"no module named 'tunelab_no_such_pkg_xyz'"),
        (
            "tunelab_models_test_broken_dep:make",
            r"was found but importing it failed.*tunelab_no_such_dependency",
        ),
        ("tunelab_models_test_raises:make", r"importing module .* raised RuntimeError: import-time failure"),
        (f"{MODULE}:make_mpl", r"has no attribute 'make_mpl'\. Did you mean 'make_mlp'\?"),
        (f"{MODULE}:Net.nope", r"'tunelab_models_test_factories\.Net' has no attribute 'nope'"),
        (f"{MODULE}:NOT_CALLABLE", r"is a int, not a function or class"),
        (f"{MODULE}:returns_class", r"returned the class Linear, not an instance; return Linear\(\.\.\.\)"),
        (f"{MODULE}:returns_string", r"returned a str; expected a torch\.nn\.Module"),
        (f"{MODULE}:raises", r"raised RuntimeError: boom: out of widgets.*input_shape=\(6,\), output_dim=3"),
        (f"{MODULE}:wrong_input_size", r"fails on a batch of 2 samples of shape \(6,\).*\[N, 6\]"),
        (f"{MODULE}:returns_tuple", r"returns a tuple .* expected a tensor of shape \[2, 3\]"),
    ],
)
def test_bad_factories_are_spec_errors(factories, factory, fragment):
    with pytest.raises(SpecError, match=fragment):
        build(CustomSpec(factory=factory))


def test_wrong_output_shape_says_what_came_out_what_was_expected_and_the_fix(factories):
    with pytest.raises(SpecError) as info:
        build(CustomSpec(factory=f"{factories}:wrong_output_dim"))
    message = str(info.value)
    assert "returns shape [2, 4]" in message
    assert "expected a tensor of shape [2, 3]" in message
    assert "last layer produce output_dim features" in message


def test_kwargs_that_do_not_fit_the_signature(factories):
    with pytest.raises(
        SpecError, match=r"widht.*Its signature is 'tunelab_models_test_factories:make_mlp'\("
    ):
        build(CustomSpec(factory=f"{factories}:make_mlp", kwargs={"widht": 3}))
    with pytest.raises(SpecError, match=r"missing a required argument: 'n_out'"):
        build(CustomSpec(factory=f"{factories}:make_linear", kwargs={"n_in": 6}))


def test_callable_returning_wrong_shape_is_named_in_the_error():
    def make(input_shape, output_dim):
        return nn.Linear(input_shape[0], 2 * output_dim)

    with pytest.raises(SpecError, match=r"factory '.*<locals>\.make' returns shape \[2, 6\]"):
        build(make)


def test_import_string_form_is_checked_when_the_spec_is_made():
    with pytest.raises(ValidationError, match="Put a colon between the module path"):
        CustomSpec(factory="mypkg.nets.make_net")


def test_spec_error_is_a_value_error_for_callers_that_catch_builtins():
    with pytest.raises(ValueError, match="returned a str"):
        build(lambda: "not a model")
