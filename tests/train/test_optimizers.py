"""Each optimizer matches its hand-computed update and reduces the loss; weight decay skips biases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.train import Trainer, TrainSpec, make_optimizer

W0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
G1 = torch.tensor([[0.2, -0.4], [1.0, 0.0]])  # the gradient of the first step
G2 = torch.tensor([[-0.3, 0.1], [0.5, 2.0]])  # ... and of the second


def steps(spec: TrainSpec, *gradients: torch.Tensor) -> list[torch.Tensor]:
    """Run one optimizer step per gradient on a weight starting at W0; the weight after each step."""
    weight = nn.Parameter(W0.clone())
    optimizer = make_optimizer([weight], spec)
    after = []
    for gradient in gradients:
        weight.grad = gradient.clone()
        optimizer.step()
        after.append(weight.detach().clone())
    return after


def test_sgd_first_step_is_w_minus_lr_g():
    (w1,) = steps(TrainSpec(optimizer="sgd", lr=0.1), G1)
    torch.testing.assert_close(w1, W0 - 0.1 * G1)


def test_momentum_second_step_adds_the_decayed_first_gradient():
    w1, w2 = steps(TrainSpec(optimizer="momentum", lr=0.1, momentum=0.9), G1, G2)
    torch.testing.assert_close(w1, W0 - 0.1 * G1)
    torch.testing.assert_close(w2, w1 - 0.1 * (0.9 * G1 + G2))


def test_nesterov_looks_ahead_along_the_velocity():
    w1, w2 = steps(TrainSpec(optimizer="nesterov", lr=0.1, momentum=0.9), G1, G2)
    # velocity v_t = m v_{t-1} + g_t; Nesterov steps along g_t + m v_t, plain momentum along v_t.
    v1, v2 = G1, 0.9 * G1 + G2
    torch.testing.assert_close(w1, W0 - 0.1 * (G1 + 0.9 * v1))
    torch.testing.assert_close(w2, w1 - 0.1 * (G2 + 0.9 * v2))
    assert not torch.allclose(w1, steps(TrainSpec(optimizer="momentum", lr=0.1), G1)[0])


def test_adam_first_step_is_lr_times_sign_of_g():
    (w1,) = steps(TrainSpec(optimizer="adam", lr=0.01, eps=1e-8), G1)
    # bias-corrected m = g and v = g^2 after one step: the update is lr * g / (|g| + eps)
    torch.testing.assert_close(w1, W0 - 0.01 * G1 / (G1.abs() + 1e-8))


def test_adam_weight_decay_is_l2_added_to_the_gradient():
    (w1,) = steps(TrainSpec(optimizer="adam", lr=0.01, weight_decay=0.5), G1)
    g = G1 + 0.5 * W0
    torch.testing.assert_close(w1, W0 - 0.01 * g / (g.abs() + 1e-8))


def test_adamw_decays_weights_decoupled_from_the_gradient():
    (w1,) = steps(TrainSpec(optimizer="adamw", lr=0.01, weight_decay=0.5), G1)
    torch.testing.assert_close(w1, W0 * (1 - 0.01 * 0.5) - 0.01 * G1 / (G1.abs() + 1e-8))


def test_rmsprop_first_step():
    (w1,) = steps(TrainSpec(optimizer="rmsprop", lr=0.01, eps=1e-8), G1)
    square_avg = (1 - 0.99) * G1**2  # torch's alpha = 0.99
    torch.testing.assert_close(w1, W0 - 0.01 * G1 / (square_avg.sqrt() + 1e-8))


def test_adagrad_first_step():
    (w1,) = steps(TrainSpec(optimizer="adagrad", lr=0.1, eps=1e-10), G1)
    torch.testing.assert_close(w1, W0 - 0.1 * G1 / (G1.abs() + 1e-10))


LEARNING_RATES = {
    "gd": 0.1, "sgd": 0.02, "momentum": 0.005, "nesterov": 0.005,
    "adam": 0.01, "adamw": 0.01, "rmsprop": 0.002, "adagrad": 0.05,
}  # fmt: skip


@pytest.mark.parametrize("name", list(LEARNING_RATES))
def test_every_optimizer_reduces_the_loss(name, mlp, regression):
    (X, y), _ = regression
    epochs = 40 if name == "gd" else 5  # gd takes one step per epoch, the others ten
    spec = TrainSpec(optimizer=name, lr=LEARNING_RATES[name], epochs=epochs, batch_size=32)
    trainer = Trainer(mlp(20, 1), spec, task="regression")
    before = trainer.evaluate(X, y)["loss"]
    trainer.fit((X, y))
    assert trainer.evaluate(X, y)["loss"] < 0.5 * before


def test_gd_takes_one_full_batch_step_per_epoch(regression):
    (X, y), _ = regression
    torch.manual_seed(0)
    model = nn.Linear(20, 1)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    trainer = Trainer(model, TrainSpec(optimizer="gd", lr=0.1, epochs=1, batch_size=7), task="regression")
    n_steps = []
    trainer.optimizer.register_step_pre_hook(lambda *_: n_steps.append(1))
    trainer.fit((X, y))
    assert len(n_steps) == 1  # batch_size is ignored: one step on all 300 rows
    # The full-batch MSE gradient, by hand: d/dw mean((Xw + b - y)^2) = 2/N X^T r.
    residual = X @ w0.T + b0 - y
    torch.testing.assert_close(model.weight.detach(), w0 - 0.1 * 2 * (residual.T @ X) / len(X))
    torch.testing.assert_close(model.bias.detach(), b0 - 0.1 * 2 * residual.mean(0))


def test_weight_decay_skips_biases_and_norm_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = make_optimizer(model.parameters(), TrainSpec(optimizer="sgd", lr=0.1, weight_decay=0.5))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    # Effect with zero gradients: weights shrink by (1 - lr * wd), biases and norm parameters stay.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if p.ndim >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
