"""Lag models on forecasting windows: ``lags``, ``normalize: last``, ``linear``, switching families."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tunelab.errors import SpecError
from tunelab.models import (
    MLPSpec,
    RNNSpec,
    WindowedModel,
    build_model,
    carried_model_fields,
    parse_model_spec,
)


def _windows(n: int = 5, length: int = 12, features: int = 2) -> torch.Tensor:
    return torch.randn(n, length, features, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", [{"type": "linear"}, {"type": "mlp", "hidden": [8]}, {"type": "gru"}])
def test_lags_read_only_the_last_steps(spec):
    model = build_model({**spec, "lags": 4}, input_shape=(12, 2), output_dim=3, seed=0).eval()
    x = _windows()
    changed = x.clone()
    changed[:, :8] = 100.0  # every step before the last four
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(changed))
        assert not torch.equal(model(x), model(x + torch.arange(12.0)[None, :, None]))


def test_linear_is_an_mlp_without_hidden_layers():
    spec = parse_model_spec({"type": "linear"})
    assert isinstance(spec, MLPSpec)
    assert spec.hidden == []
    model = build_model(spec, input_shape=(4,), output_dim=2, seed=0)
    assert [type(m).__name__ for m in model] == ["Flatten", "Linear"]
    with pytest.raises(ValidationError, match="shorthand for type 'mlp' with no hidden layer"):
        parse_model_spec({"type": "linear", "hidden": [8]})


@pytest.mark.parametrize("spec", [{"type": "linear"}, {"type": "mlp", "hidden": [8, 8]}, {"type": "lstm"}])
def test_normalize_last_starts_at_the_last_value_and_follows_levels(spec):
    model = build_model({**spec, "normalize": "last"}, input_shape=(12, 2), output_dim=3, seed=0).eval()
    assert isinstance(model, WindowedModel)
    x = _windows()
    with torch.no_grad():
        # Untrained, the forecast is the naive one: the series' last value (feature 0), for every step.
        torch.testing.assert_close(model(x), x[:, -1, :1].expand(-1, 3))
        for module in model.modules():  # once trained (any weights), a shifted window shifts the forecast
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(model(x + 50.0), model(x) + 50.0, rtol=1e-4, atol=1e-3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript's own; export silences it too
def test_windowed_model_is_scriptable():
    model = build_model(
        {"type": "mlp", "hidden": [8], "lags": 6, "normalize": "last"},
        input_shape=(12, 2),
        output_dim=1,
        seed=0,
    ).eval()
    scripted = torch.jit.script(model)
    x = _windows()
    torch.testing.assert_close(scripted(x), model(x))


def test_window_options_need_windows_long_enough():
    with pytest.raises(SpecError, match=r"model.lags is 30, but the data's windows hold 12 steps"):
        build_model({"type": "mlp", "lags": 30}, input_shape=(12, 2), output_dim=1, seed=0)
    with pytest.raises(SpecError, match="read forecasting windows of shape"):
        build_model({"type": "mlp", "normalize": "last"}, input_shape=(7,), output_dim=1, seed=0)
    with pytest.raises(ValidationError):
        parse_model_spec({"type": "rnn", "lags": 0})


def test_plain_models_are_not_wrapped():
    assert not isinstance(
        build_model({"type": "mlp"}, input_shape=(12, 2), output_dim=1, seed=0), WindowedModel
    )
    assert not MLPSpec().windowed
    assert RNNSpec(lags=3).windowed


def test_switching_family_keeps_only_shared_fields():
    mlp = MLPSpec(hidden=[32], dropout=0.3, lags=6, normalize="last", init="he_uniform").model_dump(
        mode="json"
    )
    to_lstm = carried_model_fields(mlp, "lstm")
    assert to_lstm == {"lags": 6, "normalize": "last", "init": "he_uniform", "init_gain": 1.0}
    spec = parse_model_spec({**to_lstm, "type": "lstm"})
    assert isinstance(spec, RNNSpec)
    assert spec.cell == "lstm"
    assert spec.lags == 6
    to_linear = carried_model_fields(mlp, "linear")  # same family: all but what the shorthand sets
    assert "hidden" not in to_linear
    assert to_linear["dropout"] == 0.3
    gru = RNNSpec(cell="gru", hidden_size=16).model_dump(mode="json")
    to_lstm_cell = parse_model_spec({**carried_model_fields(gru, "lstm"), "type": "lstm"})
    assert (to_lstm_cell.cell, to_lstm_cell.hidden_size) == ("lstm", 16)
    assert parse_model_spec({**carried_model_fields(gru, "rnn"), "type": "rnn"}).cell == "gru"
