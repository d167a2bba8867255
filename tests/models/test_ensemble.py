"""Ensembles: several models as one module whose output is their weighted average (soft voting)."""

from __future__ import annotations

import pydantic
import pytest
import torch

from tunelab.errors import SpecError
from tunelab.models import (
    Ensemble,
    EnsembleSpec,
    MLPSpec,
    build_model,
    combine_outputs,
    combine_rule,
    parse_model_spec,
)
from tunelab.spec import parse_spec


def _members(output_dim: int, n: int = 3) -> list[torch.nn.Module]:
    return [
        build_model(MLPSpec(hidden=[6]), input_shape=(4,), output_dim=output_dim, seed=s) for s in range(n)
    ]


def test_a_classifier_ensemble_averages_probabilities():
    members, weights = _members(3), [0.5, 0.3, 0.2]
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    ensemble = Ensemble(members, weights, combine="softmax").eval()
    with torch.no_grad():
        expected = sum(w * torch.softmax(m.eval()(x), dim=1) for m, w in zip(members, weights, strict=True))
        probabilities = torch.softmax(ensemble(x), dim=1)
    torch.testing.assert_close(probabilities, expected)


def test_a_one_logit_ensemble_averages_the_probability_of_class_one():
    members, weights = _members(1), [1.0, 1.0, 2.0]  # normalized to 0.25, 0.25, 0.5
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    ensemble = Ensemble(members, weights, combine="sigmoid").eval()
    with torch.no_grad():
        expected = sum(w / 4 * torch.sigmoid(m.eval()(x)) for m, w in zip(members, weights, strict=True))
        probability = torch.sigmoid(ensemble(x))
    torch.testing.assert_close(probability, expected)


def test_a_regression_ensemble_averages_the_outputs():
    members, weights = _members(2), [0.2, 0.2, 0.6]
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(2))
    ensemble = Ensemble(members, weights, combine="mean").eval()
    with torch.no_grad():
        expected = sum(w * m.eval()(x) for m, w in zip(members, weights, strict=True))
        torch.testing.assert_close(ensemble(x), expected)


def test_averaging_stays_finite_where_probabilities_underflow():
    # Two members sure of opposite classes: the average is a coin toss, not log(0).
    outputs = torch.tensor([[[200.0, -200.0]], [[-200.0, 200.0]]])
    combined = combine_outputs(outputs, torch.tensor([0.5, 0.5]), "softmax")
    torch.testing.assert_close(torch.softmax(combined, dim=1), torch.tensor([[0.5, 0.5]]))


def test_an_ensemble_spec_builds_an_ensemble_of_its_members():
    spec = parse_model_spec(
        {
            "type": "ensemble",
            "members": [{"type": "mlp", "hidden": [5]}, {"type": "mlp", "hidden": [3, 3]}],
            "weights": [0.75, 0.25],
            "combine": "probabilities",
        }
    )
    assert isinstance(spec, EnsembleSpec)
    model = build_model(spec, input_shape=(4,), output_dim=3, seed=7)
    assert isinstance(model, Ensemble)
    assert model.combine == "softmax"
    assert [len(list(m.parameters())) for m in model.members] == [4, 6]
    torch.testing.assert_close(model.weights, torch.tensor([0.75, 0.25]))
    # The weights are the spec's, not state: the state dict holds the members' tensors only.
    assert all(key.startswith("members.") for key in model.state_dict())
    same = build_model(spec, input_shape=(4,), output_dim=3, seed=7)
    x = torch.randn(2, 4)
    torch.testing.assert_close(model.eval()(x), same.eval()(x))


def test_combine_rule_picks_softmax_sigmoid_or_mean():
    assert combine_rule("probabilities", 3) == "softmax"
    assert combine_rule("probabilities", 1) == "sigmoid"
    assert combine_rule("mean", 1) == "mean"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"weights": [1.0]}, "one weight per member"),
        ({"weights": [1.0, 0.0]}, "greater than 0"),
        ({"members": []}, "at least 1 item"),
        ({"combine": "vote"}, "'probabilities' or 'mean'"),
    ],
)
def test_a_malformed_ensemble_spec_is_rejected(fields, message):
    data = {"type": "ensemble", "members": [{"type": "mlp"}, {"type": "mlp"}], "weights": [1.0, 1.0]}
    data["combine"] = "mean"
    with pytest.raises(pydantic.ValidationError, match=message):
        parse_model_spec({**data, **fields})


def test_an_ensemble_module_checks_its_arguments():
    with pytest.raises(SpecError, match="one weight per member"):
        Ensemble(_members(2), [1.0], combine="mean")
    with pytest.raises(SpecError, match="positive and finite"):
        Ensemble(_members(2, n=2), [1.0, -1.0], combine="mean")
    with pytest.raises(SpecError, match="combine must be one of"):
        Ensemble(_members(2, n=2), [1.0, 1.0], combine="vote")  # type: ignore[arg-type]


def test_an_experiment_model_is_never_an_ensemble():
    """Members are trained apart; an experiment trains one model."""
    ensemble = {"type": "ensemble", "members": [{"type": "mlp"}], "weights": [1.0], "combine": "mean"}
    with pytest.raises(SpecError, match="model type must be one of"):
        parse_spec({"data": {"source": "iris"}, "model": ensemble})
