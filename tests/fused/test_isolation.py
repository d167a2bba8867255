"""Members never couple: diverging members are frozen and the others carry on bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from tunelab.fused import PopAdam, PopSGD, Population, PopulationTrainer


def _train(models, optimizer_cls, hparams, x, y, **regularization):
    population = Population.from_modules(models)
    optimizer = optimizer_cls(population.parameters(), n_members=len(models), **hparams)
    trainer = PopulationTrainer(population, optimizer, **regularization)
    losses = trainer.fit(x, y, n_epochs=3, batch_size=8, seed=0)
    return trainer, losses


# Adam's step is bounded by lr, so it needs a far larger lr than SGD to overflow float32.
@pytest.mark.parametrize(("optimizer_cls", "huge_lr"), [(PopSGD, 1e6), (PopAdam, 1e30)])
def test_diverging_members_leave_the_others_bit_for_bit_unchanged(
    optimizer_cls, huge_lr, build_model, data_for
):
    x, y = data_for("mlp_plain", n=32)
    models = [build_model("mlp_plain", seed=k) for k in range(4)]
    with torch.no_grad():
        models[3][0].weight[0, 0] = math.nan  # member 3 is broken from the start
    lrs = [0.01, huge_lr, 0.02, 0.01]
    trainer, losses = _train(
        models,
        optimizer_cls,
        {"lr": lrs, "momentum": [0.9] * 4} if optimizer_cls is PopSGD else {"lr": lrs},
        x,
        y,
        clip_norm=[1.0, math.inf, math.inf, 1.0],
    )
    assert trainer.alive.tolist() == [True, False, True, False]
    assert trainer.diverged_at_step[3] == 0
    assert trainer.diverged_at_step[1] > 0  # it took some steps of the huge lr to overflow
    assert "diverged at step" in trainer.status()[1]
    assert torch.isnan(losses[-1][[1, 3]]).all()
    assert torch.isfinite(losses[-1][[0, 2]]).all()

    healthy = [build_model("mlp_plain", seed=k) for k in (0, 2)]
    reference, reference_losses = _train(
        healthy,
        optimizer_cls,
        {"lr": [0.01, 0.02], "momentum": [0.9] * 2} if optimizer_cls is PopSGD else {"lr": [0.01, 0.02]},
        x,
        y,
        clip_norm=[1.0, math.inf],
    )
    for ours, theirs in ((0, 0), (2, 1)):
        mine, ref = (
            trainer.population.member(ours).state_dict(),
            reference.population.member(theirs).state_dict(),
        )
        for name in ref:
            assert torch.equal(mine[name], ref[name]), (ours, name)
        assert torch.equal(losses[-1][ours], reference_losses[-1][theirs])


def test_a_dead_member_is_frozen_where_it_died(build_model, data_for):
    x, y = data_for("mlp", n=16)
    models = [build_model("mlp", seed=k) for k in range(2)]
    population = Population.from_modules(models)
    trainer = PopulationTrainer(population, PopAdam(population.parameters(), n_members=2, lr=1e-2))
    trainer.train_step(x, y)
    with torch.no_grad():
        population.layers[0].weight[1, 0, 0] = math.inf
    frozen = {name: value.clone() for name, value in population.member(1).state_dict().items()}
    step_before = int(trainer.optimizer.step_count[1])
    trainer.fit(x, y, n_epochs=2, batch_size=8)
    assert trainer.alive.tolist() == [True, False]
    after = population.member(1).state_dict()
    for name in ("0.weight", "4.weight", "4.bias", "6.weight", "6.bias"):
        assert torch.equal(after[name], frozen[name]), name
    assert int(trainer.optimizer.step_count[1]) == step_before
    assert int(trainer.optimizer.step_count[0]) == step_before + 4


def test_gradient_clipping_is_per_member_never_global(build_model, data_for):
    """A member with a huge gradient is clipped alone; a member under its bound keeps its exact gradient."""
    x, y = data_for("mlp", n=16)
    population = Population.from_modules([build_model("mlp", seed=k) for k in range(2)])
    with torch.no_grad():
        population.layers[-1].weight[1] *= 1e4  # member 1's gradients are huge
    params = list(population.parameters())
    from tunelab.fused import clip_grad_norm_per_member, member_loss

    member_loss(population(x), y).sum().backward()
    before = [p.grad.clone() for p in params]
    norms = clip_grad_norm_per_member(params, torch.tensor([1e9, 1.0], dtype=torch.float64))
    assert norms[1] > 1.0
    for grad, old in zip((p.grad for p in params), before, strict=True):
        assert torch.equal(grad[0], old[0])
    clipped = torch.sqrt(sum(p.grad[1].double().square().sum() for p in params))
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)
