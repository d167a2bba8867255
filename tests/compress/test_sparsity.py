"""Unstructured magnitude sparsity: which weights, exact counts, masks, the gradual schedule in training."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from tunelab.compress._sparsity import (
    GradualSparsity,
    apply_masks,
    cubic_sparsity,
    magnitude_masks,
    prunable_weights,
    sparsity_of,
)
from tunelab.errors import SpecError
from tunelab.models import build_model
from tunelab.train import Callback, Trainer, TrainSpec


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models; tests/conftest.py restores the count


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits as ((X_train, y_train), (X_val, y_val)), X float32 [N, 64] in [0, 1]."""
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return (X[:1200], y[:1200]), (X[1200:], y[1200:])


class _Mixed(nn.Module):
    """Every kind of layer: what is prunable and what is not."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 6, 3)
        self.norm = nn.BatchNorm1d(6)
        self.lstm = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.layer_norm = nn.LayerNorm(10)
        self.head = nn.Linear(10, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, tokens):
        x = self.norm(self.conv(self.embed(tokens).transpose(1, 2))).transpose(1, 2)
        return self.head(self.layer_norm(self.lstm(x)[0][:, -1])) * self.scale


def _model(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _Mixed()


def test_prunable_weights_are_the_weight_matrices_of_linear_conv_and_recurrent_layers():
    names = [name for name, _ in prunable_weights(_model())]
    recurrent = [
        f"lstm.weight_{kind}_l{layer}{suffix}"
        for layer in (0, 1)
        for suffix in ("", "_reverse")
        for kind in ("ih", "hh")
    ]
    assert names == ["conv.weight", *recurrent, "head.weight"]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.999])
def test_global_masks_drop_exactly_the_smallest_weights(sparsity):
    model = _model()
    weights = prunable_weights(model)
    masks = magnitude_masks(model, sparsity, scope="global")
    assert list(masks) == [name for name, _ in weights]
    n = sum(p.numel() for _, p in weights)
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * n)
    dropped = torch.cat([p.detach().abs()[~masks[name]] for name, p in weights])
    kept = torch.cat([p.detach().abs()[masks[name]] for name, p in weights])
    if len(dropped):
        assert dropped.max() <= kept.min()
    before = {name: p.detach().clone() for name, p in weights}
    apply_masks(model, masks)
    assert sparsity_of(model) == round(sparsity * n) / n
    for name, p in weights:  # kept weights are untouched
        assert torch.equal(p.detach()[masks[name]], before[name][masks[name]])


def test_layer_masks_give_every_layer_the_sparsity():
    model = _model()
    with torch.no_grad():
        model.head.weight.mul_(100.0)  # global ranking would spare this layer entirely
    masks = magnitude_masks(model, 0.6, scope="layer")
    for name, parameter in prunable_weights(model):
        dropped = int((~masks[name]).sum())
        assert dropped == round(0.6 * parameter.numel()), name
        magnitudes = parameter.detach().abs()
        assert magnitudes[~masks[name]].max() <= magnitudes[masks[name]].min()
    assert int((~magnitude_masks(model, 0.6, scope="global")["head.weight"]).sum()) == 0


def test_ties_are_broken_in_a_fixed_order():
    layers = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    with torch.no_grad():
        for layer in layers:
            layer.weight.fill_(0.5)
    masks = magnitude_masks(layers, 0.5, scope="global")  # 5 of 10: the first layer's 6 weights go first
    assert masks["0.weight"].flatten().tolist() == [False] * 5 + [True]
    assert masks["1.weight"].all()
    layer_masks = magnitude_masks(layers, 0.5, scope="layer")
    assert layer_masks["0.weight"].flatten().tolist() == [False] * 3 + [True] * 3
    assert layer_masks["1.weight"].flatten().tolist() == [False, False, True, True]


def test_previous_masks_only_grow():
    model = _model()
    first = magnitude_masks(model, 0.4, scope="global")
    with torch.no_grad():  # the dropped weights become the largest: magnitude alone would keep them now
        for name, parameter in prunable_weights(model):
            parameter[~first[name]] = 10.0
    second = magnitude_masks(model, 0.6, scope="global", previous=first)
    for name in first:
        assert not (second[name] & ~first[name]).any(), name
    n = sum(m.numel() for m in first.values())
    assert sum(int((~m).sum()) for m in second.values()) == round(0.6 * n)
    lower = magnitude_masks(model, 0.1, scope="layer", previous=second)  # never fewer than before
    assert all(torch.equal(lower[name], second[name]) for name in second)


def test_bad_arguments_are_refused():
    model = _model()
    for sparsity in (-0.1, 1.0, True, "0.5"):
        with pytest.raises(SpecError, match=r"sparsity must be a number in \[0, 1\)"):
            magnitude_masks(model, sparsity)
    with pytest.raises(SpecError, match="scope must be 'global'"):
        magnitude_masks(model, 0.5, scope="model")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="no weights sparsity applies to"):
        magnitude_masks(nn.Sequential(nn.ReLU()), 0.5)
    with pytest.raises(SpecError, match=r"does not have: nope\.weight"):
        apply_masks(model, {"nope.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(SpecError, match=r"bool tensor of its shape \[3, 10\]"):
        apply_masks(model, {"head.weight": torch.ones(3, 10)})
    with pytest.raises(SpecError, match="start_epoch <= end_epoch"):
        GradualSparsity(model, 0.5, start_epoch=3, end_epoch=2)


def test_cubic_schedule_of_zhu_and_gupta():
    values = [cubic_sparsity(t, 0.8, start=2, end=6) for t in (0, 2, 3, 4, 6, 9)]
    assert values == pytest.approx([0.0, 0.0, 0.8 * (1 - 0.75**3), 0.8 * (1 - 0.5**3), 0.8, 0.8])
    assert cubic_sparsity(3, 0.5, start=3, end=3) == 0.5  # one shot


class _Watcher(Callback):
    """After each epoch (after GradualSparsity, which comes first): the zeros, and the sparsity."""

    def __init__(self, model):
        self.model = model
        self.zeros: list[dict[str, torch.Tensor]] = []
        self.sparsity: list[float] = []
        self.steps_per_epoch = 0

    def on_train_begin(self, logs):
        self.steps_per_epoch = logs["steps_per_epoch"]

    def on_epoch_end(self, epoch, logs):
        self.zeros.append({name: p.detach() == 0 for name, p in prunable_weights(self.model)})
        self.sparsity.append(sparsity_of(self.model))


@pytest.mark.parametrize(
    ("scope", "updates_per_epoch", "optimizer", "lr"),
    [("global", 1, "adam", 3e-3), ("layer", 3, "momentum", 0.1)],
)
def test_gradual_sparsity_in_a_real_fit(digits, scope, updates_per_epoch, optimizer, lr):
    model = build_model({"type": "mlp", "hidden": [48, 32]}, input_shape=(64,), output_dim=10, seed=0)
    schedule = GradualSparsity(
        model, 0.8, scope=scope, start_epoch=1, end_epoch=4, updates_per_epoch=updates_per_epoch
    )
    watcher = _Watcher(model)
    spec = TrainSpec(epochs=5, batch_size=64, optimizer=optimizer, lr=lr)
    history = Trainer(model, spec, task="classification", callbacks=[schedule, watcher]).fit(*digits)

    weights = prunable_weights(model)
    n = sum(p.numel() for _, p in weights)
    # Each epoch ends at the sparsity its last update set: the optimizer's steps left the zeros zero.
    steps = watcher.steps_per_epoch
    last_update = (updates_per_epoch - 1) * steps // updates_per_epoch  # 0: the epoch's beginning
    expected = [cubic_sparsity(e + last_update / steps, 0.8, start=1, end=4) for e in range(1, 6)]
    if scope == "global":
        assert watcher.sparsity == [round(s * n) / n for s in expected]
    else:
        assert watcher.sparsity == [sum(round(s * p.numel()) for _, p in weights) / n for s in expected]
    assert sparsity_of(model) == pytest.approx(0.8, abs=1 / n)
    for earlier, later in zip(watcher.zeros, watcher.zeros[1:], strict=False):  # a zeroed weight stays zero
        assert all((later[name] | ~earlier[name]).all() for name in earlier)
    for name, parameter in weights:  # the zeros are the mask's, and only those
        assert torch.equal(parameter.detach() == 0, ~schedule.masks[name]), name
    assert history.epochs[-1]["val_accuracy"] > 0.8  # still learns at 80% sparsity


def test_gradual_sparsity_must_end_within_the_fit(digits):
    model = build_model({"type": "mlp", "hidden": [8]}, input_shape=(64,), output_dim=10, seed=0)
    schedule = GradualSparsity(model, 0.5, end_epoch=4)
    with pytest.raises(SpecError, match="training runs 2 epochs"):
        Trainer(model, TrainSpec(epochs=2), task="classification", callbacks=[schedule]).fit(digits[0])
