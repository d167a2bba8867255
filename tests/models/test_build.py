"""build_model: shapes for every family and input kind, the layer contract, seeding, and shape checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.models import (
    ByteDropout,
    CNNSpec,
    MLPSpec,
    RNNSpec,
    SequenceModel,
    build_model,
    count_parameters,
)

TABLE, IMAGE, SEQUENCE = (10,), (3, 12, 10), (7, 4)

# The only layer types MLP and CNN models may contain (tunelab.fused converts exactly these).
ALLOWED = (
    nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SELU, nn.SiLU,
)  # fmt: skip
ACTIVATION_TYPES = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU, "silu": nn.SiLU,
}  # fmt: skip


def build(spec, shape, output_dim=3, seed=0):
    return build_model(spec, input_shape=shape, output_dim=output_dim, seed=seed)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (MLPSpec(), TABLE),
        (MLPSpec(hidden=[]), TABLE),
        (MLPSpec(hidden=[5, 6, 7], batch_norm=True, dropout=0.5), TABLE),
        (MLPSpec(hidden=[16]), IMAGE),
        (MLPSpec(hidden=[16]), SEQUENCE),
        (CNNSpec(channels=[4, 8], dense=[16]), IMAGE),
        (CNNSpec(channels=[4], dense=[], pool="avg", kernel_size=5), (1, 28, 28)),
        (CNNSpec(channels=[4, 4, 4], pool="none", batch_norm=True, dropout=0.2), (2, 3, 3)),
        (CNNSpec(channels=[4, 8], global_pool=True), (3, 17, 9)),
        (CNNSpec(channels=[2, 2, 2]), (1, 9, 8)),  # odd sizes round down: 9x8 -> 4x4 -> 2x2 -> 1x1
        (RNNSpec(hidden_size=6), SEQUENCE),
        (RNNSpec(cell="gru", hidden_size=6, bidirectional=True, pooling="mean"), SEQUENCE),
        (RNNSpec(cell="rnn", hidden_size=6, n_layers=3, dropout=0.3, bidirectional=True), SEQUENCE),
        (RNNSpec(hidden_size=6), (1, 1)),
    ],
    ids=lambda v: v.type if hasattr(v, "type") else str(v),
)
@pytest.mark.parametrize("output_dim", [1, 7])
def test_output_shape_for_every_family_and_input_kind(spec, shape, output_dim):
    model = build(spec, shape, output_dim)
    assert model.training
    assert model(torch.randn(5, *shape)).shape == (5, output_dim)


@pytest.mark.parametrize("activation", sorted(ACTIVATION_TYPES))
@pytest.mark.parametrize(("batch_norm", "dropout"), [(False, 0.0), (True, 0.0), (False, 0.25), (True, 0.25)])
def test_mlp_blocks_follow_the_layer_contract(activation, batch_norm, dropout):
    spec = MLPSpec(hidden=[9, 5], activation=activation, batch_norm=batch_norm, dropout=dropout)
    model = build(spec, TABLE)
    assert type(model) is nn.Sequential
    block = (
        [nn.Linear]
        + [nn.BatchNorm1d] * batch_norm
        + [ACTIVATION_TYPES[activation]]
        + [ByteDropout] * (dropout > 0)
    )
    assert [type(m) for m in model] == [nn.Flatten, *block, *block, nn.Linear]
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [9, 5, 3]
    assert all(m.p == dropout for m in model if isinstance(m, nn.Dropout))


@pytest.mark.parametrize("pool", ["max", "avg", "none"])
@pytest.mark.parametrize(("batch_norm", "dropout"), [(False, 0.0), (True, 0.3)])
@pytest.mark.parametrize("global_pool", [False, True])
def test_cnn_blocks_follow_the_layer_contract(pool, batch_norm, dropout, global_pool):
    spec = CNNSpec(
        channels=[4, 6], dense=[8], kernel_size=5, pool=pool, batch_norm=batch_norm, dropout=dropout,
        global_pool=global_pool, activation="gelu",
    )  # fmt: skip
    model = build(spec, IMAGE)
    assert type(model) is nn.Sequential
    assert all(isinstance(m, ALLOWED) for m in model)
    pool_layer = {"max": [nn.MaxPool2d], "avg": [nn.AvgPool2d], "none": []}[pool]
    conv = [nn.Conv2d, *[nn.BatchNorm2d] * batch_norm, nn.GELU, *[ByteDropout] * (dropout > 0), *pool_layer]
    dense = [nn.Linear] + [nn.BatchNorm1d] * batch_norm + [nn.GELU] + [ByteDropout] * (dropout > 0)
    head = [nn.AdaptiveAvgPool2d, nn.Flatten] if global_pool else [nn.Flatten]
    assert [type(m) for m in model] == [*conv, *conv, *head, *dense, nn.Linear]
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (4, (5, 5), (2, 2)),
        (6, (5, 5), (2, 2)),
    ]
    # the first dense layer reads what the conv stack leaves: 12x10 -> 6x5 -> 3x2 with pooling
    height, width = (1, 1) if global_pool else (12, 10) if pool == "none" else (3, 2)
    assert next(m for m in model if isinstance(m, nn.Linear)).in_features == 6 * height * width


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_model_structure(cell, bidirectional):
    spec = RNNSpec(cell=cell, hidden_size=5, n_layers=2, bidirectional=bidirectional, dropout=0.1)
    model = build(spec, SEQUENCE)
    assert isinstance(model, SequenceModel)
    assert type(model.rnn) is {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    assert model.rnn.batch_first
    assert (model.rnn.input_size, model.rnn.num_layers, model.rnn.dropout) == (4, 2, 0.1)
    assert model.pooling == "last"
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == (10 if bidirectional else 5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_last_pooling_reads_each_directions_final_state(cell, bidirectional):
    model = build(RNNSpec(cell=cell, hidden_size=5, n_layers=2, bidirectional=bidirectional), SEQUENCE)
    x = torch.randn(3, *SEQUENCE)
    _, hidden = model.rnn(x)
    h_n = hidden[0] if cell == "lstm" else hidden  # [layers * directions, N, H]
    final = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
    torch.testing.assert_close(model(x), model.head(final))


def test_mean_pooling_averages_all_steps():
    model = build(RNNSpec(cell="gru", hidden_size=5, bidirectional=True, pooling="mean"), SEQUENCE)
    x = torch.randn(3, *SEQUENCE)
    outputs, _ = model.rnn(x)
    torch.testing.assert_close(model(x), model.head(outputs.mean(dim=1)))


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (MLPSpec(hidden=[8], batch_norm=True), TABLE),
        (MLPSpec(hidden=[8], init="he_normal", init_gain=0.7), TABLE),
        (CNNSpec(channels=[3], dense=[4], init="xavier_uniform"), IMAGE),
        (RNNSpec(cell="gru", hidden_size=4, init="orthogonal"), SEQUENCE),
        (RNNSpec(hidden_size=4), SEQUENCE),
    ],
    ids=lambda v: f"{v.type}-{v.init}" if hasattr(v, "type") else str(v),
)
def test_same_seed_same_weights_other_seed_other_weights_global_rng_untouched(spec, shape):
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    first, again, other = build(spec, shape, seed=7), build(spec, shape, seed=7), build(spec, shape, seed=8)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    different = [
        n for n, p in first.named_parameters() if p.dim() > 1 and not torch.equal(p, other.get_parameter(n))
    ]
    assert different == [n for n, p in first.named_parameters() if p.dim() > 1]


def test_global_rng_stream_continues_as_if_build_never_ran():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build(CNNSpec(channels=[3], dense=[4], dropout=0.5), IMAGE, seed=99)
    assert torch.equal(torch.rand(3), expected)


def test_default_init_is_pytorchs_own_and_gain_scales_weights_only():
    model = build(MLPSpec(hidden=[]), TABLE, seed=5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        reference = nn.Linear(10, 3)
    torch.testing.assert_close(model[1].weight, reference.weight, rtol=0, atol=0)
    scaled = build(MLPSpec(hidden=[], init_gain=2.5), TABLE, seed=5)
    torch.testing.assert_close(scaled[1].weight, 2.5 * reference.weight)
    torch.testing.assert_close(scaled[1].bias, reference.bias, rtol=0, atol=0)


def test_dry_forward_leaves_batch_norm_statistics_and_modes_alone():
    model = build(CNNSpec(channels=[3], dense=[4], batch_norm=True), IMAGE)
    norms = [m for m in model if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(norms) == 2
    for norm in norms:
        assert int(norm.num_batches_tracked) == 0
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert all(m.training for m in model.modules())


def test_mapping_spec_is_validated_and_built():
    model = build_model({"type": "lstm", "hidden_size": 4}, input_shape=SEQUENCE, output_dim=2, seed=0)
    assert isinstance(model.rnn, nn.LSTM)


@pytest.mark.parametrize(
    ("spec", "shape", "fragment"),
    [
        (CNNSpec(), TABLE, r"CNN needs image samples of shape \(channels, height, width\).*\(10,\)"),
        (RNNSpec(), IMAGE, r"RNN needs sequence samples of shape \(length, features\)"),
        (RNNSpec(), TABLE, r"RNN needs sequence samples"),
        (CNNSpec(channels=[4, 4, 4]), (1, 5, 5), r"conv block 3 of 3 would shrink the 1x1.*pool: none"),
    ],
)
def test_family_and_input_kind_mismatch_is_a_spec_error(spec, shape, fragment):
    with pytest.raises(SpecError, match=fragment):
        build(spec, shape)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input_shape": ()}, "input_shape must be a non-empty tuple of positive ints"),
        ({"input_shape": (3, 0)}, "input_shape must be a non-empty tuple of positive ints"),
        ({"input_shape": "10"}, "input_shape must be"),
        ({"output_dim": 0}, "output_dim must be an int >= 1"),
        ({"output_dim": 2.0}, "output_dim must be an int >= 1"),
        ({"seed": "1"}, "seed must be an int"),
    ],
)
def test_bad_build_arguments_are_spec_errors(kwargs, fragment):
    arguments = {"input_shape": TABLE, "output_dim": 2, "seed": 0} | kwargs
    with pytest.raises(SpecError, match=fragment):
        build_model(MLPSpec(), **arguments)


def test_not_a_spec_is_a_spec_error():
    with pytest.raises(SpecError, match=r"needs a ModelSpec.*got a int"):
        build_model(3, input_shape=TABLE, output_dim=2, seed=0)  # type: ignore[arg-type]


def test_count_parameters():
    model = build(MLPSpec(hidden=[20]), TABLE)
    assert count_parameters(model) == 10 * 20 + 20 + 20 * 3 + 3
    with_norm = build(MLPSpec(hidden=[20], batch_norm=True), TABLE)
    assert (
        count_parameters(with_norm) == count_parameters(model) + 2 * 20
    )  # BN scale and shift; buffers excluded
    model[1].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 20 * 3 + 3
    lstm = build(RNNSpec(hidden_size=5), SEQUENCE)
    assert count_parameters(lstm) == 4 * (5 * 4 + 5 * 5 + 2 * 5) + 5 * 3 + 3


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_relu_block_with_max_pooling_activates_after_the_pool_computing_the_same_function(
    activation, batch_norm
):
    spec = CNNSpec(channels=[5, 4], dense=[6], dropout=0.3, batch_norm=batch_norm, activation=activation)
    model = build(spec, IMAGE)
    act = ACTIVATION_TYPES[activation]
    block = [nn.Conv2d] + [nn.BatchNorm2d] * batch_norm + [ByteDropout, nn.MaxPool2d, act]
    assert [type(m) for m in model][: 2 * len(block)] == block * 2
    # The textbook order (activation, dropout, pool) with the same weights: same outputs and gradients, the
    # dropout masks equal too (same seed, same shapes, drawn in the same order).
    textbook = []
    for index in range(0, 2 * len(block), len(block)):
        conv_bn, (dropout, pool, activation_module) = (
            list(model[index : index + len(block) - 3]),
            model[index + len(block) - 3 : index + len(block)],
        )
        textbook += [*conv_bn, activation_module, dropout, pool]
    reference = nn.Sequential(*textbook, *model[2 * len(block) :])
    x = torch.randn(8, *IMAGE)
    for mode in (False, True):
        model.train(mode)
        outputs, grads = [], []
        for net in (model, reference):
            net.zero_grad()
            torch.manual_seed(11)
            out = net(x)
            out.square().sum().backward()
            outputs.append(out.detach())
            grads.append([p.grad.clone() for p in net.parameters()])
        torch.testing.assert_close(outputs[0], outputs[1])
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b)


def test_other_activations_and_average_pooling_keep_the_textbook_order():
    for spec in (CNNSpec(channels=[4], activation="gelu"), CNNSpec(channels=[4], pool="avg")):
        kinds = [type(m) for m in build(spec, IMAGE)][:3]
        assert kinds[1] in (nn.GELU, nn.ReLU)
