"""On the CPU the Trainer runs convolutional models channels-last: the same training, a faster layout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tunelab.models import build_model
from tunelab.train import Trainer, TrainSpec

SPEC = {"type": "cnn", "channels": [6, 4], "dense": [8], "batch_norm": True}


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def _trainer(model: nn.Module) -> Trainer:
    # SGD: Adam would turn rounding noise in the zero gradient of a bias before batch norm into whole steps.
    spec = TrainSpec(optimizer="sgd", lr=0.05, batch_size=16, epochs=3, seed=0, device="cpu")
    return Trainer(model, spec, task="classification", n_classes=3)


def test_a_cnn_is_trained_channels_last_to_the_weights_a_contiguous_one_reaches():
    x, y = _data()
    model = build_model(SPEC, input_shape=(3, 8, 8), output_dim=3, seed=0)
    contiguous_model = copy.deepcopy(model)
    fast = _trainer(model)
    assert next(model.parameters()).is_contiguous(memory_format=torch.channels_last)
    slow = _trainer(contiguous_model)
    slow._channels_last = False  # the layout before channels-last, for comparison
    contiguous_model.to(memory_format=torch.contiguous_format)
    fast_history, slow_history = fast.fit((x, y), (x, y)), slow.fit((x, y), (x, y))
    # Only the order of float additions inside the convolutions differs.
    for a, b in zip(model.state_dict().values(), contiguous_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for fast_epoch, slow_epoch in zip(fast_history.epochs, slow_history.epochs, strict=True):
        assert fast_epoch["loss"] == pytest.approx(slow_epoch["loss"], rel=1e-4)
    torch.testing.assert_close(fast.predict(x), slow.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("spec", "channels_last"), [(SPEC, True), ({"type": "mlp", "hidden": [4]}, False)])
def test_images_reach_a_cnn_channels_last_and_other_models_as_given(spec, channels_last):
    model = build_model(spec, input_shape=(3, 8, 8), output_dim=3, seed=0)
    seen: list[bool] = []
    model.register_forward_pre_hook(
        lambda _, inputs: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    trainer = _trainer(model)
    x, y = _data(32)
    trainer.fit((x, y), (x, y))
    trainer.predict(x)
    assert seen
    assert all(layout == channels_last for layout in seen)
