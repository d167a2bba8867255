"""Shrink, refill, exploit and explore act in place and leave the other members untouched."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import SpecError
from tunelab.fused import PopAdam, PopSGD, Population, PopulationTrainer


def _trainer(models, *, lr, dropout_rates=None):
    population = Population.from_modules(models)
    trainer = PopulationTrainer(population, PopAdam(population.parameters(), n_members=len(models), lr=lr))
    return trainer


def _batches(x, y, n_steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        index = torch.randint(0, x.shape[0], (8,), generator=generator)
        yield x[index], y[index]


def _assert_same_member(trainer_a, k_a, trainer_b, k_b, *, exact=True):
    a, b = trainer_a.population.member(k_a).state_dict(), trainer_b.population.member(k_b).state_dict()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], msg=name)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm_bidirectional_2layer"])
def test_shrunk_survivors_continue_exactly_as_if_never_shrunk(kind, build_model, data_for):
    x, y = data_for(kind, n=32)
    lrs = [1e-2, 2e-2, 5e-3, 3e-2]
    shrunk = _trainer([build_model(kind, seed=k) for k in range(4)], lr=lrs)
    full = _trainer([build_model(kind, seed=k) for k in range(4)], lr=lrs)
    batches = list(_batches(x, y, 6, seed=3))
    for xb, yb in batches[:3]:
        shrunk.train_step(xb, yb)
        full.train_step(xb, yb)
    shrunk.shrink([3, 1])  # keeps and reorders
    assert shrunk.n_members == 2
    assert shrunk.optimizer.n_members == 2
    assert shrunk.hparams["lr"].tolist() == [3e-2, 2e-2]
    assert shrunk.optimizer.step_count.tolist() == [3, 3]
    for xb, yb in batches[3:]:
        shrunk.train_step(xb, yb)
        full.train_step(xb, yb)
    _assert_same_member(shrunk, 0, full, 3)
    _assert_same_member(shrunk, 1, full, 1)
    assert shrunk.population(x).shape[0] == 2


def test_shrink_rejects_bad_indices(build_model):
    trainer = _trainer([build_model("mlp", seed=k) for k in range(3)], lr=1e-3)
    with pytest.raises(SpecError, match=r"outside 0\.\.2"):
        trainer.shrink([0, 5])
    with pytest.raises(SpecError, match="non-empty"):
        trainer.shrink([])


def test_refill_starts_the_slot_afresh_and_leaves_the_others(build_model, data_for):
    x, y = data_for("mlp", n=32)
    refilled = _trainer([build_model("mlp", seed=k) for k in range(3)], lr=[1e-2, 2e-2, 3e-2])
    untouched = _trainer([build_model("mlp", seed=k) for k in range(3)], lr=[1e-2, 2e-2, 3e-2])
    batches = list(_batches(x, y, 6, seed=1))
    for xb, yb in batches[:3]:
        refilled.train_step(xb, yb)
        untouched.train_step(xb, yb)
    newcomer = build_model("mlp", seed=42, dropout=0.25)
    with pytest.warns(DeprecationWarning, match="refill is deprecated"):
        refilled.refill(1, newcomer, {"lr": 5e-3, "label_smoothing": 0.1})
    assert refilled.optimizer.step_count.tolist() == [3, 0, 3]
    assert refilled.hparams["dropout"].tolist() == [0.0, 0.25, 0.0]
    assert all(bool((state["exp_avg"][1] == 0).all()) for state in refilled.optimizer.state)
    # The newcomer trains as it would in a fresh population of its own.
    alone = PopulationTrainer(
        population := Population.from_modules([build_model("mlp", seed=42, dropout=0.25)]),
        PopAdam(population.parameters(), n_members=1, lr=5e-3),
        label_smoothing=0.1,
    )
    # Dropout off for the comparison: the two populations draw from different random streams.
    refilled.set_hparams({"dropout": 0.0}, members=[1])
    alone.set_hparams({"dropout": 0.0})
    for xb, yb in batches[3:]:
        refilled.train_step(xb, yb)
        untouched.train_step(xb, yb)
        alone.train_step(xb, yb)
    _assert_same_member(refilled, 1, alone, 0, exact=False)
    _assert_same_member(refilled, 0, untouched, 0)
    _assert_same_member(refilled, 2, untouched, 2)


def test_refill_revives_a_dead_member(build_model, data_for):
    x, y = data_for("mlp_plain", n=16)
    population = Population.from_modules([build_model("mlp_plain", seed=k) for k in range(2)])
    trainer = PopulationTrainer(population, PopSGD(population.parameters(), n_members=2, lr=[0.01, 1e6]))
    trainer.fit(x, y, n_epochs=4, batch_size=8)
    assert trainer.alive.tolist() == [True, False]
    with pytest.warns(DeprecationWarning, match="refill"):
        trainer.refill(1, build_model("mlp_plain", seed=7), {"lr": 0.01})
    assert trainer.alive.tolist() == [True, True]
    assert trainer.diverged_at_step[1] == -1
    assert torch.isfinite(trainer.fit(x, y, n_epochs=1, batch_size=8)[0]).all()


def test_exploit_copies_everything_and_explore_perturbs_the_copy(build_model, data_for):
    x, y = data_for("cnn", n=24)
    trainer = _trainer([build_model("cnn", seed=k) for k in range(3)], lr=[1e-2, 1e-3, 3e-3])
    trainer.set_hparams({"l1": [0.0, 1e-4, 0.0]})
    trainer.fit(x, y, n_epochs=1, batch_size=8)
    trainer.exploit(src=0, dst=2)
    _assert_same_member(trainer, 0, trainer, 2)  # weights and BatchNorm running statistics
    for state in trainer.optimizer.state:
        assert torch.equal(state["exp_avg"][2], state["exp_avg"][0])
        assert torch.equal(state["exp_avg_sq"][2], state["exp_avg_sq"][0])
    assert trainer.hparams["lr"][2] == trainer.hparams["lr"][0]
    assert trainer.optimizer.step_count[2] == trainer.optimizer.step_count[0]
    # Identical copies with identical hyperparameters stay identical (dropout is 0 in this model).
    trainer.fit(x, y, n_epochs=1, batch_size=8, seed=1)
    _assert_same_member(trainer, 0, trainer, 2)

    generator = torch.Generator().manual_seed(0)
    with pytest.warns(DeprecationWarning, match="explore is deprecated"):
        new = trainer.explore(2, generator=generator, names=("lr", "beta1"), factors=(0.8, 1.2))
    assert new["lr"] / 1e-2 == pytest.approx(0.8) or new["lr"] / 1e-2 == pytest.approx(1.2)
    assert trainer.hparams["lr"][2].item() == pytest.approx(new["lr"])
    assert trainer.hparams["beta1"][2].item() <= 0.999
    assert trainer.hparams["lr"][0].item() == pytest.approx(1e-2)  # the source is untouched


def test_unknown_hyperparameter_names_say_what_is_valid(build_model):
    trainer = _trainer([build_model("mlp", seed=0)], lr=1e-3)
    with pytest.raises(SpecError, match="Did you mean 'weight_decay'"):
        trainer.set_hparams({"weight_decy": 0.1})
    with pytest.raises(SpecError, match="label_smoothing must be in"):
        trainer.set_hparams({"label_smoothing": 1.5})
    with pytest.raises(SpecError, match="beta1 must be in"):
        trainer.set_hparams({"beta1": 1.0})
