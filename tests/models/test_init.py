"""Init schemes against their documented formulas, measured on layers large enough for tight tolerances.

With n >= 60,000 weights the sample variance's relative standard error is sqrt(2 / n) <= 0.6%, so a 4%
tolerance is a > 6-sigma band; the schemes being told apart differ by 25% or more.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.models import INIT_SCHEMES, MLPSpec, RNNSpec, build_model, init_weights

RTOL = 0.04


def initialized(layer: nn.Module, scheme: str, *, gain: float = 1.0, seed: int = 0) -> nn.Module:
    return init_weights(layer, scheme, gain=gain, generator=torch.Generator().manual_seed(seed))


def assert_variance(weight: torch.Tensor, expected: float) -> None:
    assert abs(weight.mean().item()) < 5 * math.sqrt(expected / weight.numel())
    assert weight.var().item() == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_he_normal_variance_is_two_over_fan_in(gain):
    layer = initialized(nn.Linear(1500, 500), "he_normal", gain=gain)
    assert_variance(layer.weight, gain**2 * 2 / 1500)
    assert torch.count_nonzero(layer.bias) == 0


def test_he_normal_conv_fan_in_counts_the_kernel():
    layer = initialized(nn.Conv2d(64, 128, 3), "he_normal")  # fan_in = 64 * 3 * 3
    assert_variance(layer.weight, 2 / 576)


@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_he_uniform_bound_is_sqrt_six_over_fan_in(gain):
    layer = initialized(nn.Linear(1500, 500), "he_uniform", gain=gain)
    bound = gain * math.sqrt(6 / 1500)
    largest = layer.weight.abs().max().item()
    assert bound * 0.999 < largest <= bound * (1 + 1e-6)
    assert_variance(layer.weight, bound**2 / 3)


def test_xavier_normal_variance_is_two_over_fan_in_plus_fan_out():
    layer = initialized(nn.Linear(1500, 500), "xavier_normal")
    assert_variance(layer.weight, 2 / 2000)


def test_xavier_uniform_bound_is_sqrt_six_over_fan_sum():
    layer = initialized(nn.Linear(1500, 500), "xavier_uniform", gain=0.8)
    bound = 0.8 * math.sqrt(6 / 2000)
    assert bound * 0.999 < layer.weight.abs().max().item() <= bound * (1 + 1e-6)
    assert_variance(layer.weight, bound**2 / 3)


@pytest.mark.parametrize(("n_in", "n_out"), [(256, 256), (384, 128), (128, 384)])
@pytest.mark.parametrize("gain", [1.0, 1.5])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(n_in, n_out, gain):
    weight = initialized(nn.Linear(n_in, n_out), "orthogonal", gain=gain).weight.detach()  # [out, in]
    # the shorter side's vectors are orthonormal: W Wᵀ = I for wide W, Wᵀ W = I for tall W
    gram = weight @ weight.T if n_out <= n_in else weight.T @ weight
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(n_in, n_out)), atol=1e-4, rtol=0)


def test_lstm_gates_are_initialized_one_by_one():
    layer = initialized(nn.LSTM(300, 200, batch_first=True), "xavier_normal")
    for gate in layer.weight_ih_l0.chunk(4):  # each gate maps 300 -> 200, so fan_in + fan_out = 500
        assert_variance(gate, 2 / 500)
    for gate in layer.weight_hh_l0.chunk(4):
        assert_variance(gate, 2 / 400)
    assert all(torch.count_nonzero(b) == 0 for b in (layer.bias_ih_l0, layer.bias_hh_l0))


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_orthogonal_recurrent_gate_matrices(cell):
    layer = initialized(cell(32, 64, num_layers=2, bidirectional=True), "orthogonal", gain=1.2)
    recurrent = [p for name, p in layer.named_parameters() if name.startswith("weight_hh")]
    assert len(recurrent) == 4  # two layers, two directions
    for weight in recurrent:
        for gate in weight.detach().chunk(weight.shape[0] // 64):
            torch.testing.assert_close(gate @ gate.T, 1.44 * torch.eye(64), atol=1e-4, rtol=0)
    assert all(torch.count_nonzero(p) == 0 for name, p in layer.named_parameters() if name.startswith("bias"))


def test_gru_he_normal_through_build_model():
    model = build_model(
        RNNSpec(cell="gru", hidden_size=128, init="kaiming_normal"),
        input_shape=(5, 400),
        output_dim=2,
        seed=0,
    )
    for gate in model.rnn.weight_ih_l0.chunk(3):
        assert_variance(gate, 2 / 400)
    assert_variance(model.rnn.weight_hh_l0, 2 / 128)


def test_build_model_applies_the_spec_scheme_to_every_layer():
    model = build_model(
        MLPSpec(hidden=[600, 400], init="he_normal", init_gain=0.5),
        input_shape=(800,),
        output_dim=300,
        seed=3,
    )
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for layer in linears:
        assert_variance(layer.weight, 0.25 * 2 / layer.in_features)
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("scheme", [name for name in INIT_SCHEMES if name != "default"])
def test_the_generator_alone_decides_the_weights(scheme):
    layers = [nn.Linear(30, 20) for _ in range(3)]  # three different PyTorch initializations
    rng_before = torch.get_rng_state()
    first, again, other = (
        initialized(layer, scheme, seed=s).weight for layer, s in zip(layers, (4, 4, 5), strict=True)
    )
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_unknown_scheme_and_bad_gain_are_spec_errors():
    with pytest.raises(SpecError, match=r"unknown init scheme 'lecun'.*he_normal.*kaiming_normal"):
        initialized(nn.Linear(2, 2), "lecun")
    with pytest.raises(SpecError, match="finite number > 0"):
        initialized(nn.Linear(2, 2), "he_normal", gain=0.0)
