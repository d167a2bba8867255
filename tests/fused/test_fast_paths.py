"""Shortcuts of a training step give exactly the results of the long way round.

The fused optimizers cut each member's slices of the parameters and state once and reuse them (they must
follow tensors that get new storage), per-member clipping skips rewriting the gradients when no member
is over its bound (a factor of 1 changes nothing), and whether a step needs L1, clipping, label smoothing,
weight decay or momentum at all is read from a cache that must follow every change of those values.
"""

from __future__ import annotations

import math

import pytest
import torch

from tunelab.fused import (
    PopAdagrad,
    PopAdam,
    PopAdamW,
    PopSGD,
    Population,
    PopulationTrainer,
    clip_grad_norm_per_member,
    member_loss,
)
from tunelab.fused._hostflags import HostFlags

FUSED_CASES = {
    "sgd_momentum": (PopSGD, {"lr": [0.1, 0.05, 0.2], "momentum": [0.9, 0.0, 0.5]}),
    "adam": (PopAdam, {"lr": [1e-2, 3e-3, 3e-2], "beta1": [0.9, 0.8, 0.5]}),
    "adamw": (PopAdamW, {"lr": [1e-2, 3e-3, 3e-2], "weight_decay": [0.0, 1e-2, 1e-1]}),
    "adagrad": (PopAdagrad, {"lr": [1e-2, 3e-2, 5e-2], "lr_decay": [0.0, 1e-3, 1e-2]}),
}


def _trainer(optimizer_cls, hparams, build_model):
    population = Population.from_modules([build_model("mlp", seed=k) for k in range(3)])
    optimizer = optimizer_cls(population.parameters(), n_members=3, **hparams)
    assert optimizer.implementation == "fused"
    return PopulationTrainer(population, optimizer)


def _batches(x, y, n_steps):
    generator = torch.Generator().manual_seed(2)
    for _ in range(n_steps):
        index = torch.randint(0, x.shape[0], (8,), generator=generator)
        yield x[index], y[index]


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_step_follows_parameters_and_state_moved_to_new_storage(case, build_model, data_for):
    """Parameters whose storage is replaced (as ``Population.select_`` does) and replaced state tensors are
    what later steps update: training goes on bit for bit as without the move."""
    optimizer_cls, hparams = FUSED_CASES[case]
    x, y = data_for("mlp", n=32)
    moved, steady = (_trainer(optimizer_cls, hparams, build_model) for _ in range(2))
    batches = list(_batches(x, y, 6))
    for xb, yb in batches[:3]:
        moved.train_step(xb, yb)
        steady.train_step(xb, yb)
    old_params = [p.detach().clone() for p in moved.population.parameters()]
    with torch.no_grad():
        for p in moved.population.parameters():
            p.data = p.data.clone()
    for state in moved.optimizer.state:
        for name in state:
            state[name] = state[name].clone()
    for xb, yb in batches[3:]:
        moved.train_step(xb, yb)
        steady.train_step(xb, yb)
    pairs = zip(moved.population.parameters(), steady.population.parameters(), old_params, strict=True)
    for p, q, old in pairs:
        assert not torch.equal(p, old)  # the new storage moved
        assert torch.equal(p, q)
    for mine, theirs in zip(moved.optimizer.state, steady.optimizer.state, strict=True):
        for name in theirs:
            assert torch.equal(mine[name], theirs[name]), name
    assert torch.equal(moved.optimizer.step_count, steady.optimizer.step_count)


def test_fused_step_reads_each_members_own_step_after_a_reset(build_model, data_for):
    """Member steps are read from cached views: a reset member's bias correction restarts at step 1."""
    x, y = data_for("mlp", n=32)
    trainer = _trainer(PopAdam, {"lr": [1e-2, 2e-2, 3e-2]}, build_model)
    batches = list(_batches(x, y, 5))
    for xb, yb in batches[:3]:
        trainer.train_step(xb, yb)
    with pytest.warns(DeprecationWarning, match="refill"):
        trainer.refill(2, build_model("mlp", seed=9), {"lr": 5e-3})
    alone = _trainer(PopAdam, {"lr": [5e-3] * 3}, lambda kind, seed: build_model(kind, seed=9))
    for xb, yb in batches[3:]:
        trainer.train_step(xb, yb)
        alone.train_step(xb, yb)
    assert trainer.optimizer.step_count.tolist() == [5, 5, 2]
    mine, theirs = trainer.population.member(2).state_dict(), alone.population.member(0).state_dict()
    for name, value in theirs.items():
        assert torch.equal(mine[name], value), name


@pytest.mark.parametrize("max_norm", [[1e9, 1e9], [math.inf, 1e9], [1e9, 1e-3], [1e-3, 1e-3]])
def test_clipping_skips_rewriting_unclipped_gradients_with_the_same_result(max_norm, build_model, data_for):
    """Whether or not some member is over its bound, every gradient ends as the general path makes it:
    ``g * min(1, max_norm / (norm + 1e-6))`` member by member; unclipped members keep theirs bit for bit."""
    x, y = data_for("mlp", n=16)
    population = Population.from_modules([build_model("mlp", seed=k) for k in range(2)])
    params = list(population.parameters())
    member_loss(population(x), y).sum().backward()
    before = [p.grad.clone() for p in params]
    bound = torch.tensor(max_norm, dtype=torch.float64)
    norms = clip_grad_norm_per_member(params, bound)
    squares = [g.reshape(2, -1).double().square().sum(dim=1) for g in before]
    expected_norms = torch.stack(squares).sum(dim=0).sqrt()
    torch.testing.assert_close(norms.double(), expected_norms, rtol=1e-5, atol=0.0)
    factor = (bound.to(norms.dtype) / (norms + 1e-6)).clamp(max=1.0)
    for p, old in zip(params, before, strict=True):
        assert torch.equal(p.grad, old * factor.view(-1, *([1] * (old.dim() - 1))))
        for k in range(2):
            if max_norm[k] >= 1.0:  # far above these gradients' norms
                assert torch.equal(p.grad[k], old[k])
    assert bool((norms > 1e-3).all())  # the small bounds really clip


def test_host_flags_are_recomputed_after_in_place_writes_and_replacement():
    flags, calls = HostFlags(), []

    def count_any(tensor):
        calls.append(1)
        return tensor.any()

    values = torch.zeros(3)
    assert flags.get("l1", values, count_any) is False
    assert flags.get("l1", values, count_any) is False
    assert len(calls) == 1  # unchanged: from the cache
    values[1] = 0.5
    assert flags.get("l1", values, count_any) is True
    replaced = torch.zeros(3)
    assert flags.get("l1", replaced, count_any) is False
    assert len(calls) == 3


def test_switching_regularization_on_mid_training_takes_effect_at_the_next_step(build_model, data_for):
    """Each flag is read on the first steps, then its values change in place: the next step must be the
    one computed with no cached flags at all."""
    x, y = data_for("mlp", n=16)
    changes = {
        "l1": [0.0, 1e-2],
        "clip_norm": [math.inf, 1e-3],
        "label_smoothing": [0.2, 0.0],
        "weight_decay": [0.0, 0.1],
        "momentum": [0.9, 0.0],
    }

    def trainer_for(values):
        population = Population.from_modules([build_model("mlp", seed=k) for k in range(2)])
        optimizer = PopSGD(population.parameters(), n_members=2, lr=0.05)
        trainer = PopulationTrainer(population, optimizer)
        trainer.set_hparams(values)
        return trainer, population

    switched, switched_population = trainer_for({})
    for _ in range(2):
        switched.train_step(x, y)
    switched.set_hparams(changes)
    switched.train_step(x, y)

    reference, reference_population = trainer_for({})
    for _ in range(2):
        reference.train_step(x, y)
    reference.set_hparams(changes)
    reference._flags = HostFlags()  # nothing cached: every flag is read afresh from the new values
    reference.optimizer._flags = HostFlags()
    reference.train_step(x, y)
    for k in range(2):
        for name, value in reference_population.member(k).state_dict().items():
            assert torch.equal(switched_population.member(k).state_dict()[name], value), (k, name)

    # And the third step really differed from a step without the changes.
    plain, plain_population = trainer_for({})
    for _ in range(3):
        plain.train_step(x, y)
    assert not torch.equal(plain_population.member(0)[0].weight, switched_population.member(0)[0].weight)
