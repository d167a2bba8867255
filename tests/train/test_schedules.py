"""Each schedule yields its documented learning-rate sequence, equals torch's scheduler, and is applied."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim import lr_scheduler

from tunelab.train import PlateauState, RunLength, ScheduleSpec, Trainer, TrainSpec, lr_at, update_plateau


def sequence(spec: ScheduleSpec, base_lr: float, clock: RunLength) -> list[float]:
    return [lr_at(spec, base_lr, step, clock) for step in range(clock.total_steps)]


def torch_sequence(make, base_lr: float, clock: RunLength, *, per_step: bool) -> list[float]:
    """The rate torch's scheduler gives each step, stepped per optimizer step or per epoch."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = make(optimizer)
    rates = []
    for step in range(clock.total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if per_step or (step + 1) % clock.steps_per_epoch == 0:
            scheduler.step()
    return rates


def test_constant():
    assert sequence(ScheduleSpec(name="constant"), 0.1, RunLength(3, 4)) == [0.1] * 12


def test_step_documented_and_torch():
    spec, clock = ScheduleSpec(name="step", step_size=2, gamma=0.5), RunLength(3, 6)
    per_epoch = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert sequence(spec, 1.0, clock) == [lr for lr in per_epoch for _ in range(3)]
    expected = torch_sequence(
        lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5), 1.0, clock, per_step=False
    )
    assert sequence(spec, 1.0, clock) == pytest.approx(expected, rel=1e-12)


def test_exponential_documented_and_torch():
    spec, clock = ScheduleSpec(name="exponential", gamma=0.5), RunLength(2, 4)
    assert sequence(spec, 1.0, clock) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    expected = torch_sequence(lambda o: lr_scheduler.ExponentialLR(o, gamma=0.5), 1.0, clock, per_step=False)
    assert sequence(spec, 1.0, clock) == pytest.approx(expected, rel=1e-12)


def test_cosine_documented_and_torch():
    spec, clock = ScheduleSpec(name="cosine", min_lr=0.0), RunLength(2, 2)
    c = math.cos(math.pi / 4)
    assert sequence(spec, 1.0, clock) == pytest.approx([1.0, (1 + c) / 2, 0.5, (1 - c) / 2], abs=1e-15)
    spec, clock = ScheduleSpec(name="cosine", min_lr=0.01), RunLength(7, 5)
    expected = torch_sequence(
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=clock.total_steps, eta_min=0.01),
        0.1,
        clock,
        per_step=True,
    )
    assert sequence(spec, 0.1, clock) == pytest.approx(expected, rel=1e-9)


def test_warmup_documented_and_torch():
    spec, clock = ScheduleSpec(name="warmup", warmup_epochs=1, min_lr=0.0), RunLength(2, 3)
    c = math.cos(math.pi / 4)
    documented = [0.5, 1.0, 1.0, (1 + c) / 2, 0.5, (1 - c) / 2]  # linear over W=2 steps, cosine over 4
    assert sequence(spec, 1.0, clock) == pytest.approx(documented, abs=1e-15)

    spec, clock = ScheduleSpec(name="warmup", warmup_epochs=2, min_lr=0.001), RunLength(5, 6)
    n_warmup = 2 * 5

    def make(optimizer):
        warm = lr_scheduler.LinearLR(
            optimizer, start_factor=1 / n_warmup, end_factor=1.0, total_iters=n_warmup - 1
        )
        cool = lr_scheduler.CosineAnnealingLR(optimizer, T_max=clock.total_steps - n_warmup, eta_min=0.001)
        return lr_scheduler.SequentialLR(optimizer, [warm, cool], milestones=[n_warmup])

    assert sequence(spec, 0.1, clock) == pytest.approx(
        torch_sequence(make, 0.1, clock, per_step=True), rel=1e-9
    )


def test_onecycle_documented_and_torch():
    spec, clock = ScheduleSpec(name="onecycle", max_lr=1.0, pct_start=0.3), RunLength(5, 2)
    rates = sequence(spec, 0.1, clock)  # lr is ignored when max_lr is given
    assert rates[0] == pytest.approx(1.0 / 25)
    assert rates[2] == pytest.approx(1.0)  # the peak at step pct_start * T - 1 = 2
    assert rates[-1] == pytest.approx(1.0 / 25 / 1e4)
    assert rates.index(max(rates)) == 2

    spec, clock = ScheduleSpec(name="onecycle", pct_start=0.25), RunLength(9, 4)  # max_lr defaults to lr
    expected = torch_sequence(
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=clock.total_steps, pct_start=0.25,
                                          cycle_momentum=False),
        0.1, clock, per_step=True,
    )  # fmt: skip
    assert sequence(spec, 0.1, clock) == pytest.approx(expected, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    steps_per_epoch=st.integers(1, 9),
    n_epochs=st.integers(2, 8),
    gamma=st.floats(0.1, 1.0),
    min_lr=st.floats(0.0, 0.05),
    pct_start=st.floats(0.05, 0.95),
)
def test_closed_forms_equal_torch_for_any_run_length(steps_per_epoch, n_epochs, gamma, min_lr, pct_start):
    clock, lr = RunLength(steps_per_epoch, n_epochs), 0.1
    T = clock.total_steps
    cases = [
        (
            ScheduleSpec(name="exponential", gamma=gamma),
            lambda o: lr_scheduler.ExponentialLR(o, gamma),
            False,
        ),
        (
            ScheduleSpec(name="step", step_size=2, gamma=gamma),
            lambda o: lr_scheduler.StepLR(o, 2, gamma),
            False,
        ),
        (
            ScheduleSpec(name="cosine", min_lr=min_lr),
            lambda o: lr_scheduler.CosineAnnealingLR(o, T, min_lr),
            True,
        ),
    ]
    if pct_start * T >= 2:  # torch's OneCycleLR divides by its warm phase's length

        def onecycle(optimizer):
            return lr_scheduler.OneCycleLR(
                optimizer, lr, total_steps=T, pct_start=pct_start, cycle_momentum=False
            )

        cases.append((ScheduleSpec(name="onecycle", pct_start=pct_start), onecycle, True))
    for spec, make, per_step in cases:
        assert sequence(spec, lr, clock) == pytest.approx(
            torch_sequence(make, lr, clock, per_step=per_step), rel=1e-7
        )


def test_plateau_documented_and_torch():
    values = [1.0, 0.9, 0.95, 0.96, 0.8, 0.85, 0.86, 0.87, 0.5]
    state, rates = PlateauState(), []
    spec = ScheduleSpec(name="plateau", patience=1, factor=0.5, min_lr=0.0)
    for epoch, value in enumerate(values, start=1):
        state = update_plateau(state, value, epoch=epoch, patience=1)
        rates.append(lr_at(spec, 1.0, 0, RunLength(1, 1), n_reductions=state.n_reductions))
    # Two epochs without a lower value exceed patience 1: the rate halves after epochs 4 and 7.
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]

    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, threshold=0.0)
    torch_rates = []
    for value in values:
        optimizer.step()
        scheduler.step(value)
        torch_rates.append(optimizer.param_groups[0]["lr"])
    assert rates == torch_rates


def test_plateau_never_goes_below_min_lr():
    spec = ScheduleSpec(name="plateau", factor=0.1, min_lr=0.02)
    assert lr_at(spec, 1.0, 0, RunLength(1, 1), n_reductions=5) == 0.02


def record_rates(trainer: Trainer) -> list[float]:
    rates: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, *_: rates.append(opt.param_groups[0]["lr"]))
    return rates


@pytest.mark.parametrize(
    "schedule", [{"name": "cosine"}, {"name": "step", "step_size": 1, "gamma": 0.5}, {"name": "onecycle"}]
)
def test_trainer_sets_the_scheduled_rate_before_every_step(schedule, mlp, regression):
    (X, y), _ = regression
    spec = TrainSpec(optimizer="sgd", lr=0.05, epochs=3, batch_size=64, schedule=schedule)
    trainer = Trainer(mlp(20, 1), spec, task="regression")
    rates = record_rates(trainer)
    history = trainer.fit((X, y))
    clock = RunLength(math.ceil(len(X) / 64), 3)
    assert rates == pytest.approx(sequence(spec.schedule, 0.05, clock), rel=1e-12)
    assert [row["lr"] for row in history.epochs] == pytest.approx(rates[4::5])  # logs: each epoch's last rate


def test_trainer_plateau_cuts_the_rate_when_val_loss_stalls():
    # The validation inputs are zeros and the model has no bias: its validation loss can never change.
    torch.manual_seed(0)
    model = nn.Linear(4, 2, bias=False)
    X, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    spec = TrainSpec(lr=0.1, epochs=7, schedule={"name": "plateau", "patience": 1, "factor": 0.5})
    history = Trainer(model, spec, task="classification").fit((X, y), (torch.zeros(8, 4), y[:8]))
    assert [row["lr"] for row in history.epochs] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
