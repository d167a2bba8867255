"""Population layers reproduce the torch layers they stack, member by member."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.fused import PopLinear, Population, structural_signature

KINDS = [
    "mlp",
    "cnn",
    "rnn_relu_2layer_mean",
    "lstm_bidirectional_2layer",
    "gru_bidirectional",
    "gru_2layer_mean",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_each_member_and_updates_its_own_running_stats(kind, training, build_model, data_for):
    models = [build_model(kind, seed=k).train(training) for k in range(3)]
    population = Population.from_modules(models)
    x, _ = data_for(kind, n=10)
    out = population(x)
    assert out.shape == (3, 10, 3)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x), atol=1e-6, rtol=1e-5)
        # member(k) is an ordinary module holding exactly the state member k now has (running stats included).
        exported = population.member(k).state_dict()
        for name, value in model.state_dict().items():
            torch.testing.assert_close(exported[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_every_parameter_and_buffer_has_the_member_dimension_first(build_model):
    population = Population.from_modules([build_model("cnn", seed=k) for k in range(5)])
    for name, tensor in [*population.named_parameters(), *population.named_buffers()]:
        assert tensor.shape[0] == 5, name


def test_first_linear_layer_reads_the_shared_batch_without_copies():
    layer = PopLinear(4, 3, 2, layout_in="shared")
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(6, 3)
    expected = torch.stack([x @ layer.weight[k] + layer.bias[k] for k in range(4)])
    torch.testing.assert_close(layer(x), expected)


def test_member_dropout_drops_each_members_own_rate(build_model):
    rates = [0.0, 0.2, 0.5, 0.9]
    models = [nn.Sequential(nn.Flatten(), nn.Dropout(rate)) for rate in rates]
    population = Population.from_modules(models, seed=0)
    x = torch.ones(2000, 50)
    out = population(x)
    for k, rate in enumerate(rates):
        dropped = (out[k] == 0).double().mean().item()
        assert dropped == pytest.approx(rate, abs=0.01)
        kept = out[k][out[k] != 0]
        if rate < 1:
            torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - rate)))
    population.eval()
    assert torch.equal(population(x), x.expand(4, -1, -1))


def test_dropout_between_convolutions_and_recurrent_layers_has_per_member_rates(build_model):
    rates = [0.1, 0.6]
    convs = [nn.Sequential(nn.Conv2d(1, 8, 1, bias=False), nn.Dropout(rate)) for rate in rates]
    for conv in convs:
        nn.init.ones_(conv[0].weight)
    out = Population.from_modules(convs)(torch.ones(200, 1, 10, 10))  # packed [N, K*C, H, W] internally
    for k, rate in enumerate(rates):
        assert (out[k] == 0).double().mean().item() == pytest.approx(rate, abs=0.02)

    class Recurrent(nn.Module):
        def __init__(self, rate: float) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, num_layers=2, dropout=rate, batch_first=True)
            self.pooling, self.head = "mean", nn.Linear(4, 2)

    population = Population.from_modules([Recurrent(rate) for rate in rates])
    assert population.dropout_rates().tolist() == rates
    assert population.member(1).rnn.dropout == 0.6


def test_dropout_masks_follow_the_seed_and_leave_the_global_rng_alone():
    models = [nn.Sequential(nn.Linear(3, 50), nn.Dropout(0.5)) for _ in range(2)]
    x = torch.randn(8, 3)
    state = torch.get_rng_state()
    a = Population.from_modules(models, seed=1)(x)
    b = Population.from_modules(models, seed=1)(x)
    c = Population.from_modules(models, seed=2)(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0] == 0, a[1] == 0)  # each member draws its own mask
    assert torch.equal(torch.get_rng_state(), state)


def test_members_of_different_structure_cannot_be_fused():
    wide = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    narrow = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    other_activation = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    with pytest.raises(SpecError, match="member 1 does not have the structure of member 0"):
        Population.from_modules([wide, narrow])
    with pytest.raises(SpecError, match="Tanh"):
        Population.from_modules([wide, other_activation])
    # Dropout rates may differ: they are per-member hyperparameters, not structure.
    assert structural_signature(nn.Sequential(nn.Dropout(0.1))) == structural_signature(
        nn.Sequential(nn.Dropout(0.7))
    )


def test_unsupported_layers_are_named_with_the_alternative():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(SpecError, match=r"layer '1' is LayerNorm.*FunctionalPopulation"):
        Population.from_modules([model])
    with pytest.raises(SpecError, match="at least one member"):
        Population.from_modules([])


def test_member_index_out_of_range_is_an_index_error(build_model):
    population = Population.from_modules([build_model("mlp", seed=0)])
    with pytest.raises(IndexError, match="out of range for a population of 1"):
        population.member(1)


def test_a_tunelab_cnn_with_its_pool_before_the_activation_and_byte_dropout_converts_member_by_member():
    """build_model's CNN blocks run conv -> BN -> ByteDropout -> max-pool -> ReLU: the population computes
    each member's function (eval mode) and gives back members of the same layers."""
    from tunelab.models import ByteDropout
    from tunelab.models import build_model as build_spec

    spec = {"type": "cnn", "channels": [4, 6], "dense": [8], "dropout": 0.3, "batch_norm": True}
    models = [build_spec(spec, input_shape=(1, 8, 8), output_dim=3, seed=k) for k in range(3)]
    population = Population.from_modules(models).eval()
    x = torch.randn(5, 1, 8, 8)
    out = population(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model.eval()(x), rtol=1e-5, atol=1e-5)
    kinds = [type(m) for m in population.member(1)][:5]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, ByteDropout, nn.MaxPool2d, nn.ReLU]
