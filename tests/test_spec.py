"""The experiment spec: defaults, round trips, and messages that point at the fix."""

from __future__ import annotations

import pytest
import yaml

from tunelab.errors import SpecError
from tunelab.spec import ExperimentSpec, load_spec, parse_spec


def test_minimal_spec_fills_best_practice_defaults():
    spec = parse_spec({"data": {"source": "digits"}})
    assert spec.model.type == "mlp"
    assert spec.train.optimizer == "adam"
    assert spec.train.epochs >= 1
    assert spec.seed == 0


def test_yaml_round_trip(tmp_path):
    spec = parse_spec({"name": "x", "data": {"source": "iris"}, "train": {"lr": 0.01, "epochs": 3}})
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec


def test_nested_unknown_key_names_the_place_and_suggests(tmp_path):
    with pytest.raises(SpecError) as info:
        parse_spec({"data": {"source": "digits"}, "model": {"type": "mlp", "hiden": [8]}})
    message = str(info.value)
    assert "model.hiden" in message
    assert "Did you mean 'hidden'" in message


def test_every_problem_is_listed_at_once():
    with pytest.raises(SpecError) as info:
        parse_spec({"data": {"source": "digits"}, "train": {"lr": 0, "epochs": -1}})
    message = str(info.value)
    assert "2 problems" in message
    assert "train.lr" in message
    assert "train.epochs" in message


def test_name_must_be_usable_as_a_directory():
    with pytest.raises(SpecError, match="name"):
        parse_spec({"name": "../escape", "data": {"source": "digits"}})


def test_spec_is_a_pydantic_model_with_forbidden_extras():
    assert ExperimentSpec.model_config.get("extra") == "forbid"
    assert yaml.safe_load(parse_spec({"data": {"source": "digits"}}).to_yaml())["data"]["source"] == "digits"
