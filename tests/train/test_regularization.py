"""Regularizers change training the way they should: L1 sparsifies, weight decay shrinks, dropout is
stochastic only in training, gradient clipping bounds the gradient the optimizer sees."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import make_regression
from torch import nn

from tunelab.train import Trainer, TrainSpec


@pytest.fixture(scope="module")
def sparse_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """80 noisy rows, 40 features of which 4 matter: least squares gives every feature some weight."""
    X, y = make_regression(n_samples=80, n_features=40, n_informative=4, noise=20.0, random_state=0)
    y = (y - y.mean()) / y.std()
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]


def fitted_linear(problem, **spec) -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(problem[0].shape[1], 1)
    schedule = {"name": "cosine"}  # the rate decays to zero so that weights settle
    Trainer(model, TrainSpec(epochs=40, batch_size=16, schedule=schedule, **spec), task="regression").fit(
        problem
    )
    return model


def test_l1_drives_most_irrelevant_weights_to_zero(sparse_problem):
    plain = fitted_linear(sparse_problem, optimizer="sgd", lr=0.05).weight.detach().abs().flatten()
    sparse = fitted_linear(sparse_problem, optimizer="sgd", lr=0.05, l1=0.05).weight.detach().abs().flatten()
    assert (plain < 1e-3).sum() <= 2
    assert (sparse < 1e-3).sum() >= 20
    assert (sparse > 0.2).sum() == (plain > 0.2).sum() == 4  # the informative features keep their weight


def test_l1_leaves_the_bias_alone():
    # With zero data gradient (an all-zero input), L1 moves the weight toward 0 but not the bias.
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    spec = TrainSpec(optimizer="sgd", lr=0.1, l1=0.5, epochs=1, batch_size=4)
    Trainer(model, spec, task="regression").fit((torch.zeros(4, 1), torch.ones(4, 1)))
    assert model.weight.item() == pytest.approx(1.0 - 0.1 * 0.5)
    assert model.bias.item() == pytest.approx(1.0)


def test_weight_decay_shrinks_the_weight_norm(mlp, regression):
    train, _ = regression
    norms = {}
    for decay in (0.0, 0.5):
        model = mlp(20, 1, hidden=32)
        spec = TrainSpec(optimizer="adamw", lr=0.01, weight_decay=decay, epochs=8, batch_size=32)
        Trainer(model, spec, task="regression").fit(train)
        norms[decay] = torch.cat([p.detach().flatten() for p in model.parameters() if p.ndim >= 2]).norm()
    assert norms[0.5] < 0.8 * norms[0.0]


def test_dropout_is_random_in_training_and_off_in_prediction(mlp, digits):
    (X, y), (X_val, _) = digits
    model = mlp(64, 10, hidden=64, dropout=0.5)
    trainer = Trainer(model, TrainSpec(epochs=1), task="classification")
    trainer.fit((X, y))
    model.train()
    assert not torch.equal(model(X_val), model(X_val))
    first = trainer.predict(X_val)
    torch.testing.assert_close(trainer.predict(X_val), first, rtol=0, atol=0)
    model.eval()
    torch.testing.assert_close(first, torch.softmax(model(X_val), dim=1))


def test_dropout_is_reproducible_and_leaves_the_global_rng_alone(mlp, digits, without_timings):
    train, val = digits
    global_state = torch.get_rng_state()
    runs = [
        Trainer(mlp(64, 10, dropout=0.5), TrainSpec(epochs=2, seed=seed), task="classification").fit(
            train, val
        )
        for seed in (3, 3, 4)
    ]
    assert without_timings(runs[0].epochs) == without_timings(runs[1].epochs)
    assert without_timings(runs[0].epochs) != without_timings(runs[2].epochs)
    assert torch.equal(torch.get_rng_state(), global_state)


def total_grad_norms(trainer: Trainer) -> list[float]:
    norms: list[float] = []

    def record(optimizer, *_):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    return norms


@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_clip_bounds_the_total_norm_the_optimizer_sees(clip, mlp, regression):
    train, _ = regression
    trainer = Trainer(
        mlp(20, 1), TrainSpec(optimizer="sgd", lr=0.01, epochs=2, grad_clip=clip), task="regression"
    )
    norms = total_grad_norms(trainer)
    trainer.fit(train)
    if clip is None:
        assert max(norms) > 0.5
    else:
        assert max(norms) <= clip * (1 + 1e-5)
        assert min(norms) == pytest.approx(clip, rel=1e-5)  # every step's gradient was larger, so clipped
