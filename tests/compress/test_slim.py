"""Structured slimming: narrower specs, kept slices copied exactly, what a slimmed model computes, sizes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tunelab.compress._slim import slim_model, slim_spec, slim_width, unit_scores
from tunelab.errors import SpecError
from tunelab.models import (
    CNNSpec,
    EnsembleSpec,
    MLPSpec,
    RNNSpec,
    WindowedModel,
    build_model,
    count_parameters,
    parse_model_spec,
)

OUT = 3


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models; tests/conftest.py restores the count


def _trained_like(spec, input_shape, *, seed=1):
    """A model of ``spec`` in eval mode whose BatchNorms hold non-trivial statistics and scales."""
    model = build_model(parse_model_spec(spec), input_shape=input_shape, output_dim=OUT, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def _inputs(input_shape, n=6):
    return torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(7))


def _kept(scores, k):
    """The test's own top-k: indices of the k highest scores (ties to the lower index), ascending."""
    return sorted(sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:k])


MLPS = [
    {"type": "mlp", "hidden": [12, 7]},
    {"type": "mlp", "hidden": [12, 7], "batch_norm": True, "dropout": 0.3},
    {"type": "mlp", "hidden": [12, 7], "activation": "tanh", "dropout": 0.1},
    {"type": "linear"},
]
CNNS = [
    {"type": "cnn", "channels": [4, 6], "dense": [10], "pool": pool, "global_pool": gp, "batch_norm": bn}
    for pool in ("max", "avg", "none")
    for gp in (False, True)
    for bn in (False, True)
] + [{"type": "cnn", "channels": [5], "dense": [], "activation": "gelu", "dropout": 0.2, "batch_norm": True}]
RNNS = [
    {"type": cell, "hidden_size": 6, "n_layers": 2, "bidirectional": bi, "pooling": pooling, "dropout": 0.2}
    for cell in ("lstm", "gru", "rnn")
    for bi in (False, True)
    for pooling in ("last", "mean")
]
WINDOWED = [
    {"type": "mlp", "hidden": [9], "lags": 4, "normalize": "last"},
    {"type": "gru", "hidden_size": 5, "lags": 3},
]
SHAPES = {"mlp": (5,), "linear": (5,), "cnn": (2, 8, 8), "lstm": (7, 3), "gru": (7, 3), "rnn": (7, 3)}


def _shape(spec):
    return (7, 3) if "lags" in spec else SHAPES[spec["type"]]


# ---------------------------------------------------------------------------------------------- specs


def test_slim_width_rounds_half_up_and_keeps_one():
    assert [slim_width(w, 0.5) for w in (1, 2, 3, 5, 64)] == [1, 1, 2, 3, 32]
    assert [slim_width(w, 0.7) for w in (32, 64, 128)] == [22, 45, 90]
    assert slim_width(45, 0.7) == 32  # 31.5 up, though 45 * 0.7 is 31.499999999999996 in binary
    assert slim_width(100, 0.001) == 1
    assert slim_width(17, 1.0) == 17


def test_slim_spec_narrows_hidden_widths_only():
    mlp = slim_spec(MLPSpec(hidden=[128, 64], batch_norm=True, dropout=0.1, lags=4), 0.5)
    assert (mlp.hidden, mlp.batch_norm, mlp.dropout, mlp.lags) == ([64, 32], True, 0.1, 4)
    cnn = slim_spec(CNNSpec(channels=[32, 64], dense=[128], kernel_size=5, global_pool=True), 0.7)
    assert (cnn.channels, cnn.dense, cnn.kernel_size, cnn.global_pool) == ([22, 45], [90], 5, True)
    rnn = slim_spec({"type": "gru", "hidden_size": 64, "n_layers": 2, "bidirectional": True}, 0.25)
    assert isinstance(rnn, RNNSpec)
    assert (rnn.cell, rnn.hidden_size, rnn.n_layers, rnn.bidirectional) == ("gru", 16, 2, True)
    assert slim_spec(MLPSpec(hidden=[]), 0.5).hidden == []
    spec = CNNSpec()
    assert slim_spec(spec, 1.0) == spec


@pytest.mark.parametrize("ratio", [0, 0.0, -0.5, 1.5, True, "0.5", float("nan")])
def test_ratio_outside_zero_one_is_refused(ratio):
    with pytest.raises(SpecError, match=r"ratio must be a number in \(0, 1\]"):
        slim_spec(MLPSpec(), ratio)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "custom", "factory": "mypkg.nets:make"},
        EnsembleSpec(members=[MLPSpec(), MLPSpec()], weights=[1, 1], combine="mean"),
    ],
)
def test_specs_of_unknown_layers_are_refused(spec):
    with pytest.raises(SpecError, match=r"slimming needs a tunelab-built model \(mlp, cnn, rnn\)"):
        slim_spec(spec, 0.5)


# ---------------------------------------------------------------------------------------------- ratio 1


@pytest.mark.parametrize("spec", MLPS + CNNS + RNNS + WINDOWED, ids=repr)
def test_ratio_one_computes_what_the_model_computes(spec):
    shape = _shape(spec)
    model = _trained_like(spec, shape)
    new_spec, slim = slim_model(model, spec, 1.0, input_shape=shape, output_dim=OUT)
    assert new_spec == parse_model_spec(spec)
    x = _inputs(shape)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), model(x), atol=1e-6, rtol=0)


def test_channels_last_weights_of_a_trained_cnn_slice_as_their_logical_layout():
    spec = {"type": "cnn", "channels": [4, 6], "dense": [10], "batch_norm": True}
    model = _trained_like(spec, (2, 8, 8))
    reference = copy.deepcopy(model)
    model.to(memory_format=torch.channels_last)  # as the Trainer leaves a CNN on the CPU
    _, slim = slim_model(model, spec, 1.0, input_shape=(2, 8, 8), output_dim=OUT)
    x = _inputs((2, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(slim(x), reference(x), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- ratio < 1


def _zero_dropped_inputs(model, scores, ratio):
    """Hooks on ``model`` (a Sequential) that zero, at the input of the module reading each hidden layer, the
    units the test's own ranking drops: the original with the dropped units' outputs set to zero."""
    modules = list(model)
    producers = [i for i, m in enumerate(modules) if isinstance(m, (nn.Linear, nn.Conv2d))][:-1]
    readers = (nn.Linear, nn.Conv2d, nn.Flatten, nn.AdaptiveAvgPool2d)
    handles = []
    for index, score in zip(producers, scores, strict=True):
        width = len(score)
        kept = _kept(score, slim_width(width, ratio))
        mask = torch.zeros(width)
        mask[kept] = 1.0
        reader = next(m for m in modules[index + 1 :] if isinstance(m, readers))

        def zero(module, args, mask=mask):
            x = args[0]
            return (x * mask.reshape(1, -1, *([1] * (x.dim() - 2))),)

        handles.append(reader.register_forward_pre_hook(zero))
    return handles


@pytest.mark.parametrize(
    ("spec", "criterion"),
    [
        (spec, criterion)
        for spec in MLPS[:3] + CNNS
        for criterion in ("l1", "l2", "bn")
        if criterion != "bn" or spec.get("batch_norm")  # bn without batch norm: refused (tested below)
    ],
    ids=repr,
)
def test_slimmed_feed_forward_model_is_the_original_with_dropped_units_zeroed(spec, criterion):
    shape = _shape(spec)
    model = _trained_like(spec, shape)
    before = copy.deepcopy(model.state_dict())
    ratio = 0.5
    new_spec, slim = slim_model(model, spec, ratio, criterion=criterion, input_shape=shape, output_dim=OUT)
    assert new_spec == slim_spec(spec, ratio)
    assert not slim.training
    assert all(p.device.type == "cpu" for p in slim.parameters())
    scores = unit_scores(model, spec, criterion)
    assert [len(s) for s in scores] == [*spec.get("channels", []), *spec.get("dense", spec.get("hidden", []))]
    masked = copy.deepcopy(model)
    _zero_dropped_inputs(masked, scores, ratio)
    x = _inputs(shape)
    with torch.no_grad():
        expected = masked(x)
        torch.testing.assert_close(slim(x), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x), expected, atol=1e-3)  # the dropped units did matter
    for key, value in model.state_dict().items():  # the input model is unchanged
        assert torch.equal(value, before[key]), key


def _zero_rnn(model, spec, scores, *, incoming):
    """The original LSTM/GRU/RNN with the dropped units' incoming rows (every gate block, biases) zeroed, or
    their outgoing columns (their own weight_hh, the next layer's weight_ih, the head's weight)."""
    rnn, size = model.rnn, spec.hidden_size
    n_gates = {"lstm": 4, "gru": 3, "rnn": 1}[spec.cell]
    directions = ("", "_reverse") if spec.bidirectional else ("",)
    dropped = [[i for i in range(size) if i not in _kept(s, slim_width(size, 0.5))] for s in scores]
    with torch.no_grad():
        for position, units in enumerate(dropped):
            layer, suffix = divmod(position, len(directions))
            suffix = directions[suffix]
            offset = size * directions.index(suffix)
            if incoming:
                rows = [g * size + j for g in range(n_gates) for j in units]
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(rnn, f"{name}_l{layer}{suffix}")[rows] = 0.0
                continue
            getattr(rnn, f"weight_hh_l{layer}{suffix}")[:, units] = 0.0
            columns = [offset + j for j in units]
            if layer + 1 < spec.n_layers:
                for next_suffix in directions:
                    getattr(rnn, f"weight_ih_l{layer + 1}{next_suffix}")[:, columns] = 0.0
            else:
                model.head.weight[:, columns] = 0.0
    return model


@pytest.mark.parametrize("incoming", [False, True], ids=["outgoing-zeroed", "incoming-zeroed"])
@pytest.mark.parametrize("criterion", ["l1", "l2"])
@pytest.mark.parametrize("spec", RNNS, ids=repr)
def test_slimmed_rnn_is_the_original_with_dropped_units_cut_off(spec, criterion, incoming):
    # Exact both ways: with its outgoing columns zeroed a dropped unit reaches nothing; with its incoming rows
    # zeroed its state stays exactly zero (LSTM: g = tanh(0) = 0, so c = 0.5 c = 0 and h = o tanh(0) = 0;
    # GRU: n = tanh(0) = 0, so h = 0.5 h = 0; RNN: h = tanh(0) = 0), so its outgoing weights multiply zeros.
    shape = _shape(spec)
    model = _trained_like(spec, shape)
    parsed = parse_model_spec(spec)
    new_spec, slim = slim_model(model, spec, 0.5, criterion=criterion, input_shape=shape, output_dim=OUT)
    assert new_spec.hidden_size == 3
    scores = unit_scores(model, spec, criterion)
    assert len(scores) == parsed.n_layers * (2 if parsed.bidirectional else 1)
    masked = _zero_rnn(copy.deepcopy(model), parsed, scores, incoming=incoming)
    x = _inputs(shape)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), masked(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x), masked(x), atol=1e-3)


def test_each_direction_keeps_its_own_best_units():
    spec = RNNSpec(cell="lstm", hidden_size=4, bidirectional=True)
    model = _trained_like(spec.model_dump(), (7, 3))
    with torch.no_grad():  # forward: units 0 and 1 the strongest; backward: units 2 and 3
        for suffix, strong in (("", [0, 1]), ("_reverse", [2, 3])):
            for name in ("weight_ih_l0", "weight_hh_l0"):
                weight = getattr(model.rnn, name + suffix)
                weight.mul_(0.01)
                for g in range(4):
                    weight[[g * 4 + j for j in strong]] *= 1000.0
    _, slim = slim_model(model, spec, 0.5, input_shape=(7, 3), output_dim=OUT)
    forward_rows = [g * 4 + j for g in range(4) for j in (0, 1)]
    backward_rows = [g * 4 + j for g in range(4) for j in (2, 3)]
    torch.testing.assert_close(slim.rnn.bias_ih_l0, model.rnn.bias_ih_l0[forward_rows])
    torch.testing.assert_close(slim.rnn.bias_ih_l0_reverse, model.rnn.bias_ih_l0_reverse[backward_rows])
    torch.testing.assert_close(slim.head.weight, model.head.weight[:, [0, 1, 6, 7]])


def test_bn_criterion_keeps_the_largest_scales():
    spec = MLPSpec(hidden=[4], batch_norm=True)
    model = _trained_like(spec.model_dump(), (5,))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([0.1, -3.0, 0.2, 2.0]))
    _, slim = slim_model(model, spec, 0.5, criterion="bn", input_shape=(5,), output_dim=OUT)
    torch.testing.assert_close(slim[2].weight, torch.tensor([-3.0, 2.0]))
    torch.testing.assert_close(slim[2].running_var, model[2].running_var[[1, 3]])
    torch.testing.assert_close(slim[1].weight, model[1].weight[[1, 3]])
    torch.testing.assert_close(slim[-1].weight, model[-1].weight[:, [1, 3]])


def test_scores_are_the_norms_of_the_weights_producing_each_unit():
    mlp = _trained_like({"type": "mlp", "hidden": [6]}, (5,))
    weight = mlp[1].weight.detach()
    l1, l2 = unit_scores(mlp, MLPSpec(hidden=[6]), "l1"), unit_scores(mlp, MLPSpec(hidden=[6]), "l2")
    torch.testing.assert_close(l1[0], weight.abs().sum(dim=1))
    torch.testing.assert_close(l2[0], weight.norm(dim=1))
    spec = RNNSpec(cell="lstm", hidden_size=5)
    lstm = _trained_like(spec.model_dump(), (7, 3))
    (scores,) = unit_scores(lstm, spec, "l2")
    for j in range(5):
        rows = [j, 5 + j, 10 + j, 15 + j]
        both = torch.cat([lstm.rnn.weight_ih_l0[rows].flatten(), lstm.rnn.weight_hh_l0[rows].flatten()])
        torch.testing.assert_close(scores[j], both.detach().norm())


def test_windowed_models_slim_their_inner_network():
    spec = {"type": "lstm", "hidden_size": 8, "lags": 4, "normalize": "last"}
    model = _trained_like(spec, (7, 3))
    with torch.no_grad():  # trained: the zero-initialized output layer has weights now
        model.inner.head.weight.normal_(generator=torch.Generator().manual_seed(3))
    new_spec, slim = slim_model(model, spec, 0.5, input_shape=(7, 3), output_dim=OUT)
    assert isinstance(slim, WindowedModel)
    assert (slim.lags, slim.shift, slim.inner.rnn.hidden_size) == (4, True, 4)
    assert (new_spec.lags, new_spec.normalize) == (4, "last")
    assert slim.inner.head.weight.abs().sum() > 0  # copied, not the fresh model's zeros


# ---------------------------------------------------------------------------------------------- sizes


def _lstm_parameters(n_in, hidden):
    return 4 * hidden * (n_in + hidden) + 2 * 4 * hidden


def test_halving_an_lstm_cuts_its_recurrent_parameters_by_more_than_three():
    spec = RNNSpec(cell="lstm", hidden_size=128)
    model = build_model(spec, input_shape=(20, 8), output_dim=10, seed=0)
    new_spec, slim = slim_model(model.eval(), spec, 0.5, input_shape=(20, 8), output_dim=10)
    assert new_spec.hidden_size == 64
    before, after = count_parameters(model.rnn), count_parameters(slim.rnn)
    assert (before, after) == (_lstm_parameters(8, 128), _lstm_parameters(8, 64)) == (70656, 18944)
    assert before / after > 3.7  # the recurrent matrix is quadratic in the width
    assert (count_parameters(model), count_parameters(slim)) == (70656 + 1290, 18944 + 650)


def _cnn_parameters(channels, dense, *, n_in=1, side=28, n_out=10, k=3):
    total, previous = 0, n_in
    for c in channels:
        total += previous * c * k * k + c
        previous, side = c, side // 2
    features = previous * side * side
    for width in dense:
        total += features * width + width
        features = width
    return total + features * n_out + n_out


@pytest.mark.parametrize(
    ("ratio", "channels", "dense", "expected"), [(0.5, [16, 32], [64], 105866), (0.7, [22, 45], [90], 208625)]
)
def test_cnn_parameter_counts_after_slimming(ratio, channels, dense, expected):
    spec = CNNSpec(channels=[32, 64], dense=[128])
    model = build_model(spec, input_shape=(1, 28, 28), output_dim=10, seed=0)
    new_spec, slim = slim_model(model.eval(), spec, ratio, input_shape=(1, 28, 28), output_dim=10)
    assert (new_spec.channels, new_spec.dense) == (channels, dense)
    assert count_parameters(model) == _cnn_parameters([32, 64], [128]) == 421642
    assert count_parameters(slim) == _cnn_parameters(channels, dense) == expected


# ---------------------------------------------------------------------------------------------- refusals


class _OwnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(5, OUT)

    def forward(self, x):
        return self.layer(x)


def test_a_users_module_is_refused_with_the_way_out():
    with pytest.raises(SpecError, match=r"needs a tunelab-built model.*differs.*unstructured sparsity"):
        slim_model(_OwnNet(), MLPSpec(hidden=[]), 0.5, input_shape=(5,), output_dim=OUT)


def test_an_ensemble_is_refused():
    spec = EnsembleSpec(members=[MLPSpec(hidden=[4]), MLPSpec(hidden=[6])], weights=[1, 1], combine="mean")
    ensemble = build_model(spec, input_shape=(5,), output_dim=OUT, seed=0)
    with pytest.raises(SpecError, match="members one by one"):
        slim_model(ensemble, spec, 0.5, input_shape=(5,), output_dim=OUT)
    with pytest.raises(SpecError, match="got an Ensemble"):
        slim_model(ensemble, MLPSpec(hidden=[4]), 0.5, input_shape=(5,), output_dim=OUT)


def test_a_model_of_another_spec_is_refused():
    model = build_model(MLPSpec(hidden=[16]), input_shape=(5,), output_dim=OUT, seed=0)
    with pytest.raises(SpecError, match=r"1\.weight has shape \(16, 5\), expected \(32, 5\)"):
        slim_model(model, MLPSpec(hidden=[32]), 0.5, input_shape=(5,), output_dim=OUT)
    with pytest.raises(SpecError, match="module '2' is a ReLU, expected '2', a BatchNorm1d"):
        slim_model(model, MLPSpec(hidden=[16], batch_norm=True), 0.5, input_shape=(5,), output_dim=OUT)
    windowed = build_model(MLPSpec(hidden=[4], lags=3), input_shape=(7, 2), output_dim=OUT, seed=0)
    with pytest.raises(SpecError, match="lags=3"):
        slim_model(windowed, MLPSpec(hidden=[4], lags=2), 0.5, input_shape=(7, 2), output_dim=OUT)


def test_bn_criterion_needs_batch_norm():
    model = build_model(MLPSpec(hidden=[8]), input_shape=(5,), output_dim=OUT, seed=0)
    with pytest.raises(SpecError, match="batch_norm: false"):
        slim_model(model, MLPSpec(hidden=[8]), 0.5, criterion="bn", input_shape=(5,), output_dim=OUT)
    lstm = build_model(RNNSpec(), input_shape=(7, 3), output_dim=OUT, seed=0)
    with pytest.raises(SpecError, match="recurrent model has no batch norm"):
        slim_model(lstm, RNNSpec(), 0.5, criterion="bn", input_shape=(7, 3), output_dim=OUT)
    with pytest.raises(SpecError, match="criterion must be one of l1, l2, bn"):
        unit_scores(lstm, RNNSpec(), "l0")  # type: ignore[arg-type]
