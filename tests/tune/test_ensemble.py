"""The ensemble step: chosen from the re-evaluation runs' validation outputs, delivered only when validation
says so. The members' outputs here are built for the case (no training decides), so each decision is known."""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.clock import ManualClock
from tunelab.execute import Evaluator, SearchPlan
from tunelab.models import Ensemble
from tunelab.search import Events
from tunelab.spec import parse_spec
from tunelab.train import Trainer, TrainSpec
from tunelab.tune._ensemble import choose_ensemble
from tunelab.tune._greedy import Validation, cross_fitted, greedy_counts
from tunelab.tune._result import Candidate, SeedRun
from tunelab.tune._select import refit_winner


def _complementary(y: torch.Tensor, n_classes: int, n_members: int = 3) -> list[torch.Tensor]:
    """Member k is right (logit 2 on the true class) except on the rows i with i % n_members == k, where it
    is as sure of the next class. Alone each is right on about (n-1)/n of the rows; averaged, on all."""
    members = []
    for k in range(n_members):
        wrong = (torch.arange(len(y)) % n_members) == k
        labels = torch.where(wrong, (y + 1) % n_classes, y)
        members.append(2.0 * torch.nn.functional.one_hot(labels, n_classes).float())
    return members


def _accuracy_validation(ys: list[torch.Tensor], outputs: list[torch.Tensor], *, loss: bool) -> Validation:
    trainer = Trainer(torch.nn.Linear(1, 3), TrainSpec(), task="classification", n_classes=3)
    key = "loss" if loss else "accuracy"

    def metric_for(y):
        return lambda combined, rows: trainer.evaluate_outputs(combined, y[rows], names=[key])[key]

    return Validation(outputs, [metric_for(y) for y in ys], combine="softmax", maximize=not loss)


def _labels(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def test_members_that_err_on_different_rows_make_an_ensemble_that_wins_on_unseen_rows():
    ys = [_labels(90, 0), _labels(60, 1)]  # two folds' validation parts
    outputs = [torch.stack(_complementary(y, 3)) for y in ys]
    select = _accuracy_validation(ys, outputs, loss=True)
    judge = _accuracy_validation(ys, outputs, loss=False)

    counts, _ = greedy_counts(select, select.all_rows())
    assert (counts > 0).all()  # every member is kept, none outweighs the two others together
    assert int(counts.max()) < int(counts.sum()) / 2
    assert judge.score(counts, judge.all_rows()) == 1.0
    decided = cross_fitted(judge, [[0], [1], [2]], select=select, seed=0)
    # Weights chosen on half the rows may lean on one member, which then errs alone on its own rows.
    assert decided.ensemble > 0.9
    assert decided.single < 0.8  # one model alone errs on about a third of the rows
    assert decided.gain > 0.2
    assert decided.n_halves == 10


def test_members_that_agree_leave_a_single_model():
    ys = [_labels(90, 2)]
    same = _complementary(ys[0], 3)[0]
    outputs = [torch.stack([same, same.clone(), same.clone()])]
    select = _accuracy_validation(ys, outputs, loss=True)
    counts, _ = greedy_counts(select, select.all_rows())
    assert counts.tolist() == [1, 0, 0]  # adding a copy changes nothing: the first round stays the best
    decided = cross_fitted(
        _accuracy_validation(ys, outputs, loss=False), [[0, 1], [2]], select=select, seed=0
    )
    assert decided.gain == 0.0


def test_the_running_sum_scores_what_a_fresh_average_scores():
    ys = [_labels(50, 3)]
    generator = torch.Generator().manual_seed(4)
    outputs = [torch.randn(4, 50, 3, generator=generator) * 3]
    select = _accuracy_validation(ys, outputs, loss=True)
    counts, utility = greedy_counts(select, select.all_rows())
    assert abs(utility - select.utility(counts, select.all_rows())) < 1e-5


# ---------------------------------------------------------------------------------- choose_ensemble


def _setup(member_outputs, *, ensemble: bool = True):
    spec = parse_spec(
        {
            "name": "ens",
            # Digits: 288 validation rows, so a real gain stands clear of the halves' noise.
            "data": {"source": "digits"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 3, "batch_size": 64},
            "search": {"space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}}, "ensemble": ensemble},
        }
    )
    evaluator = Evaluator(spec, spec.data)
    y_val = evaluator.bundle(None).y_val
    candidates = [
        Candidate(
            trial=k,
            params={"train": {"lr": 0.01 * (k + 1)}},
            search_value=0.9,
            best_epochs=[2],
            n=1,
            mean=0.9,
            runs=(SeedRun(seed=1, outputs=(outputs(y_val),), seconds=5.0),),
        )
        for k, outputs in enumerate(member_outputs)
    ]
    refit = refit_winner(spec, candidates[0], evaluator, Events())
    return spec, evaluator, candidates, refit


def _choose(spec, evaluator, candidates, refit, *, deadline=None):
    notes: list[str] = []
    plan = SearchPlan(spec, spec.data, [None], Path("unused"), "sqlite://", "val_accuracy", "maximize")
    events = Events(log=notes.append)
    delivered = choose_ensemble(
        spec, candidates, refit, evaluator, plan, deadline, events, clock=ManualClock(100.0)
    )
    return delivered, notes


def _member(k: int):
    return lambda y: _complementary(y, 10)[k]


def test_an_ensemble_that_validation_favours_is_delivered_with_both_test_scores():
    spec, evaluator, candidates, refit = _setup([_member(0), _member(1), _member(2)])
    delivered, notes = _choose(spec, evaluator, candidates, refit)
    choice = delivered.choice
    assert choice.delivered, choice.reason
    assert isinstance(delivered.trainer.model, Ensemble)
    assert delivered.ensemble_spec is not None
    assert len(delivered.ensemble_spec.members) == 3
    assert sorted(m["trial"] for m in choice.members) == [0, 1, 2]
    assert abs(sum(m["weight"] for m in choice.members) - 1.0) < 1e-3
    # The winner's refit stands in for its run; the others are refit with their runs' seeds.
    seeds = {m["trial"]: m["delivered_seed"] for m in choice.members}
    assert seeds[0] == spec.train.seed
    assert seeds[1] == seeds[2] == 1
    assert delivered.trainer.model.members[0] is refit[1].model
    assert choice.validation["gain"] > 0
    assert choice.validation["ensemble_in_sample"] == 1.0
    assert choice.single_test_metrics == refit[0].test_metrics
    assert choice.test_metrics is not None
    assert set(choice.test_metrics) == {"loss", "accuracy", "f1"}
    assert delivered.test_metrics == choice.test_metrics
    assert notes[-1].startswith("ensemble of 3 delivered")


def test_members_that_agree_are_not_delivered_and_the_winner_is():
    same = _member(0)
    spec, evaluator, candidates, refit = _setup([same, same, same])
    delivered, notes = _choose(spec, evaluator, candidates, refit)
    assert not delivered.choice.delivered
    assert delivered.choice.reason == "the greedy selection kept a single model"
    assert delivered.trainer is refit[1]
    assert delivered.ensemble_spec is None
    assert delivered.test_metrics == refit[0].test_metrics
    assert notes == ["ensemble: the greedy selection kept a single model"]


def test_an_ensemble_whose_refits_do_not_fit_the_budget_is_not_delivered():
    spec, evaluator, candidates, refit = _setup([_member(0), _member(1), _member(2)])
    # The winner's refit is at hand; the next member's (about 5 s, as its run took) ends past the deadline.
    delivered, _ = _choose(spec, evaluator, candidates, refit, deadline=103.0)
    choice = delivered.choice
    assert not choice.delivered
    assert "budget left no time to refit its members (1 of 3 models ready)" in choice.reason
    assert choice.validation["gain"] > 0  # validation did favour it: the summary shows what was not done
    assert delivered.trainer is refit[1]


def test_search_ensemble_false_turns_the_step_off():
    spec, evaluator, candidates, refit = _setup([_member(0), _member(1), _member(2)], ensemble=False)
    delivered, _ = _choose(spec, evaluator, candidates, refit)
    assert not delivered.choice.delivered
    assert delivered.choice.reason == "off (search.ensemble: false)"
    assert delivered.choice.members == []


def test_a_gain_within_twice_its_standard_error_is_noise():
    """The case that delivered a worse model: +0.0003 accuracy over ten halves that disagreed."""
    from tunelab.tune._greedy import CrossFitted

    assert not CrossFitted(0.9797, 0.9794, 0.0003, 10, gain_se=0.002).significant
    assert CrossFitted(0.95, 0.90, 0.05, 10, gain_se=0.01).significant
    assert not CrossFitted(0.9, 0.9, 0.0, 10, gain_se=0.0).significant
    assert not CrossFitted(0.8, 0.9, -0.1, 10, gain_se=0.0).significant
