"""The search-space language: parsing, validation messages, sampling through Optuna, overrides."""

from __future__ import annotations

import importlib
from decimal import Decimal

import optuna
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import tunelab.search
from tunelab.errors import SpecError
from tunelab.search.space import Choice, Fixed, Float, Int, SearchSpace, merge_overrides, nest


def _docstring_example() -> dict:
    doc = importlib.import_module("tunelab.search.space").__doc__
    block = doc.split("::", 1)[1].split("Rules:", 1)[0]
    return yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))


def _random_trials(space: SearchSpace, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial, space.sample(trial)
        study.tell(trial, 0.0)


def test_public_names_exist():
    for module in (tunelab.search, tunelab.search.space, tunelab.search.schedulers):
        assert sorted(module.__all__) == sorted(set(module.__all__))
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_documented_example_parses_round_trips_and_samples():
    raw = _docstring_example()
    assert raw["train.lr"]["float"] == ["1e-4", "3e-2"]  # PyYAML reads 1e-4 as a string...
    space = SearchSpace.from_dict(raw)
    assert space["train.lr"] == Float(1e-4, 3e-2, log=True)  # ...and the space reads it as a number
    assert SearchSpace.from_dict(space.to_dict()) == space
    for trial, params in _random_trials(space, 40):
        train, model = params["train"], params["model"]
        assert train["epochs"] == 20
        assert model["extra"] == {"activation": "gelu"}
        assert ("momentum" in train) == (train["optimizer"] == "sgd")
        assert ("nesterov" in train) == (train["optimizer"] in ("sgd", "rmsprop"))
        assert len(model["widths"]) == model["n_layers"]
        assert all(64 <= w <= 512 for w in model["widths"])
        assert [trial.params[f"model.widths_{i}"] for i in range(model["n_layers"])] == model["widths"]
        assert model["hidden_units"] % 16 == 0
        assert space.overrides_from_params(trial.params) == params


def test_python_form_equals_yaml_form():
    python = SearchSpace(
        {
            "train.optimizer": Choice(["adam", "sgd"]),
            "train.momentum": Float(0.5, 0.99, when={"train.optimizer": "sgd"}),
            "model.n_layers": Int(1, 3),
            "model.widths": Int(64, 512, log=True, per_layer="model.n_layers"),
            "train.epochs": 20,
        }
    )
    assert python["train.epochs"] == Fixed(20)
    assert python == SearchSpace.from_dict(
        {
            "train.optimizer": {"choice": ["adam", "sgd"]},
            "train.momentum": {"float": [0.5, 0.99], "when": {"train.optimizer": "sgd"}},
            "model.n_layers": {"int": [1, 3]},
            "model.widths": {"per_layer": "model.n_layers", "int": [64, 512], "log": True},
            "train.epochs": 20,
        }
    )
    assert python.is_conditional


def test_optuna_sees_the_real_distributions():
    space = SearchSpace.from_dict(
        {"a": {"float": [1e-3, 1.0], "log": True}, "b": {"int": [0, 10], "step": 2}}
    )
    trial = next(iter(_random_trials(space, 1)))[0]
    assert trial.distributions == space.distributions()
    assert space.distributions()["a"] == optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)


def test_parameters_are_sampled_after_their_dependencies():
    # Declared before the parameter it depends on: still sampled after it.
    space = SearchSpace.from_dict(
        {"m": {"float": [0, 1], "when": {"o": "sgd"}}, "o": {"choice": ["sgd", "adam"]}}
    )
    seen = {params["o"]: "m" in params for _, params in _random_trials(space, 20)}
    assert seen == {"sgd": True, "adam": False}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"a": {"flaot": [1, 2]}}, "Did you mean 'float'"),
        ({"a": {"categorical": [1, 2]}}, "Did you mean 'choice'"),
        ({"a": {"float": [2, 1]}}, r"low must be below high; swap them"),
        ({"a": {"int": [3, 3]}}, "write the plain value"),
        ({"a": {"float": [0, 1], "log": True}}, "needs low > 0"),
        ({"a": {"int": [0, 8], "log": True}}, "needs low >= 1"),
        ({"a": {"choice": []}}, "empty list"),
        ({"a": {"choice": [1, 1]}}, "more than once"),
        ({"a": {"choice": [[1, 2], [3]]}}, "per_layer"),
        ({"a": {"float": [0, 1], "lgo": True}}, "Did you mean 'log'"),
        ({"a": {"float": [0, 1], "step": 0.3}}, "does not divide"),
        ({"a": {"int": [0, 10], "step": 3}}, "move high to 9"),
        ({"a": {"float": [0.1, 1], "log": True, "step": 0.1}}, "both log"),
        ({"a": {"float": [0, "x"]}}, "must be a number"),
        ({"a": {"float": [0, 1, 2]}}, r"\[low, high\] pair"),
        ({"a": {"float": [0, 1], "choice": [1]}}, "has one kind"),
        ({"a": {"float": [0, 1], "when": {"b": 1}}}, "'b', which is not a parameter"),
        ({"lr": {"float": [0.1, 1]}, "m": {"float": [0, 1], "when": {"lrr": 1}}}, "Did you mean 'lr'"),
        (
            {"o": {"choice": ["adam", "sgd"]}, "m": {"float": [0, 1], "when": {"o": "sdg"}}},
            "Did you mean 'sgd'",
        ),
        ({"x": {"float": [0, 1]}, "m": {"float": [0, 1], "when": {"x": 0.5}}}, "can only test a choice"),
        ({"n": {"int": [1, 3]}, "m": {"float": [0, 1], "when": {"n": 7}}}, "can never hold"),
        ({"w": {"int": [8, 64], "per_layer": "n"}}, "'n', which is not a parameter"),
        ({"n": {"float": [1, 3]}, "w": {"int": [8, 64], "per_layer": "n"}}, "non-negative int"),
        (
            {"a": {"int": [0, 3], "when": {"b": 1}}, "b": {"int": [0, 3], "when": {"a": 1}}},
            "cycle: a -> b -> a",
        ),
        ({"model": 1, "model.hidden": 2}, "overlap"),
        ({"n": {"int": [1, 3]}, "w": {"int": [8, 64], "per_layer": "n"}, "w_0": 5}, "also a parameter"),
        ({"bad name": 1}, "dotted path"),
        ([1, 2], "mapping"),
    ],
)
def test_invalid_spaces_raise_clear_spec_errors(mapping, message):
    with pytest.raises(SpecError, match=message):
        SearchSpace.from_dict(mapping)


def test_grid_needs_finite_values():
    with pytest.raises(SpecError, match=r"'lr': grid search needs finite choices.*step"):
        SearchSpace.from_dict({"lr": {"float": [0, 1]}}).grid()
    grid = SearchSpace.from_dict(
        {
            "d": {"float": [0.0, 0.3], "step": 0.1},
            "n": {"int": [1, 2]},
            "w": {"choice": [8, 16], "per_layer": "n"},
        }
    ).grid()
    assert grid == {"d": [0.0, 0.1, 0.2, 0.3], "n": [1, 2], "w_0": [8, 16], "w_1": [8, 16]}


@given(
    low_steps=st.integers(-10_000, 10_000),
    step=st.sampled_from(["0.001", "0.1", "0.25", "1", "2.5", "1000"]),
    n_steps=st.integers(1, 50),
)
def test_float_grid_spans_the_range_in_exact_steps(low_steps, step, n_steps):
    low = Decimal(step) * low_steps
    node = Float(float(low), float(low + Decimal(step) * n_steps), step=float(step))
    assert SearchSpace.from_dict(SearchSpace({"p": node}).to_dict())["p"] == node
    assert node.grid_values() == [float(low + Decimal(step) * i) for i in range(n_steps + 1)]


@given(low=st.floats(1e-8, 1e6), ratio=st.floats(1.001, 1e6))
def test_log_float_nodes_round_trip(low, ratio):
    space = SearchSpace({"p": Float(low, low * ratio, log=True)})
    assert SearchSpace.from_dict(space.to_dict()) == space


@given(
    low=st.integers(-1000, 1000),
    step=st.integers(1, 20),
    n_steps=st.integers(1, 30),
    value=st.integers(-2000, 2000),
)
def test_int_nodes_contain_exactly_their_grid(low, step, n_steps, value):
    node = Int(low, low + step * n_steps, step=step)
    grid = node.grid_values()
    assert len(grid) == n_steps + 1
    assert node.contains(value) == (value in grid)


def test_merge_overrides_is_deep_and_pure():
    base = {"train": {"lr": 0.1, "epochs": 5, "schedule": {"name": "cosine"}}, "model": {"hidden": [64]}}
    overrides = nest(
        {"train.lr": 0.01, "train.schedule.warmup": 2, "model.hidden": [128, 64], "data.seed": 3}
    )
    merged = merge_overrides(base, overrides)
    assert merged == {
        "train": {"lr": 0.01, "epochs": 5, "schedule": {"name": "cosine", "warmup": 2}},
        "model": {"hidden": [128, 64]},
        "data": {"seed": 3},
    }
    assert base["train"]["lr"] == 0.1
    assert base["model"]["hidden"] == [64]
    merged["model"]["hidden"].append(1)
    assert overrides["model"]["hidden"] == [128, 64]  # the result shares nothing with its inputs


def test_overrides_from_params_rejects_foreign_params():
    space = SearchSpace.from_dict({"a": {"float": [0, 1]}})
    with pytest.raises(SpecError, match="different search space"):
        space.overrides_from_params({"b": 0.5})
