"""The winner is the candidate with the fewest parameters within one standard error of the best mean. The
candidates' validation outputs are built for the case (no training decides), so each choice is known."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunelab.execute import Evaluator, SearchPlan
from tunelab.search import Events
from tunelab.spec import parse_spec
from tunelab.tune._result import Candidate, SeedRun
from tunelab.tune._simplest import choose_simplest

WIDE = {"model": {"hidden": [64]}}  # 64 * 64 + 64 + 64 * 10 + 10 = 4,810 parameters on 8 x 8 digits
LINEAR = {"model": {"hidden": []}}  # 64 * 10 + 10 = 650


def _setup():
    spec = parse_spec(
        {
            "name": "simplest",
            "data": {"source": "digits"},  # 288 validation rows
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 3},
            "search": {"space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}}},
        }
    )
    evaluator = Evaluator(spec, spec.data)
    return spec, evaluator, evaluator.bundle(None).y_val


def _wrong_on(y: torch.Tensor, wrong: torch.Tensor, seed: int) -> torch.Tensor:
    """Logits sure of the true class except on the ``wrong`` rows (sure of the next class); a little noise
    from ``seed`` so that two runs differ."""
    labels = torch.where(wrong, (y + 1) % 10, y)
    noise = 0.01 * torch.randn(len(y), 10, generator=torch.Generator().manual_seed(seed))
    return 3.0 * torch.nn.functional.one_hot(labels, 10).float() + noise


def _candidate(trial: int, params, y: torch.Tensor, wrong: torch.Tensor) -> Candidate:
    runs = tuple(SeedRun(seed, (_wrong_on(y, wrong, seed),), 1.0) for seed in (1, 2))
    accuracy = 1.0 - float(wrong.float().mean())
    return Candidate(trial, params, accuracy, [2, 2], [accuracy] * 2, n=2, mean=accuracy, std=0.0, runs=runs)


def _choose(spec, evaluator, candidates, metric="val_accuracy"):
    plan = SearchPlan(spec, spec.data, [None], Path("unused"), "sqlite://", metric, "maximize")
    notes: list[str] = []
    ordered, selection = choose_simplest(spec, candidates, evaluator, plan, Events(log=notes.append))
    return ordered, selection, notes


def test_a_simpler_candidate_within_the_noise_wins():
    spec, evaluator, y = _setup()
    rows = torch.arange(len(y))
    wide = _candidate(0, WIDE, y, rows % 50 == 0)  # wrong on 6 of 288 rows
    # Right on one of those rows and wrong on two others: one row worse, three rows of disagreement.
    linear = _candidate(1, LINEAR, y, ((rows % 50 == 0) & (rows != 0)) | (rows == 7) | (rows == 8))
    ordered, selection, notes = _choose(spec, evaluator, [wide, linear])
    assert [c.trial for c in ordered] == [1, 0]
    assert selection is not None
    assert (selection.best, selection.winner) == (0, 1)
    assert selection.parameters == {0: 4810, 1: 650}
    assert selection.difference[1] == pytest.approx(1 / 288, abs=1e-6)
    # Three rows that disagree: a standard error of about sqrt(3) rows, more than the one row of difference.
    assert 1.3 / 288 < selection.standard_error[1] < 2.2 / 288
    assert notes[-1].startswith("selection: trial 1 (650 parameters) is within one standard error")
    record = selection.to_dict()
    assert record["winner_trial"] == 1
    assert record["best_mean_trial"] == 0
    assert [c["trial"] for c in record["candidates"]] == [0, 1]


def test_a_metric_that_is_not_a_mean_over_rows_is_scored_afresh_on_each_resampling():
    spec, evaluator, y = _setup()
    rows = torch.arange(len(y))
    wide = _candidate(0, WIDE, y, rows % 50 == 0)
    linear = _candidate(1, LINEAR, y, ((rows % 50 == 0) & (rows != 0)) | (rows == 7) | (rows == 8))
    ordered, selection, _ = _choose(spec, evaluator, [wide, linear], metric="val_f1")
    assert selection is not None
    assert [c.trial for c in ordered] == [1, 0]
    assert 0 < selection.difference[1] < selection.standard_error[1] < 0.02


def test_a_simpler_candidate_clearly_worse_does_not_win():
    spec, evaluator, y = _setup()
    rows = torch.arange(len(y))
    wide = _candidate(0, WIDE, y, rows % 50 == 0)
    linear = _candidate(1, LINEAR, y, rows % 10 == 0)  # wrong on 29 rows: 23 more than the wide one
    ordered, selection, notes = _choose(spec, evaluator, [wide, linear])
    assert [c.trial for c in ordered] == [0, 1]
    assert selection is not None
    assert selection.winner == 0
    assert selection.difference[1] > 3 * selection.standard_error[1]
    assert notes[-1] == (
        "selection: trial 0 has the best mean, and none within one standard error of it has fewer parameters"
    )


def test_the_best_mean_stays_when_it_is_also_the_simplest_or_alone():
    spec, evaluator, y = _setup()
    rows = torch.arange(len(y))
    linear = _candidate(0, LINEAR, y, rows % 50 == 0)
    wide = _candidate(1, WIDE, y, (rows % 50 == 0) | (rows == 7))
    ordered, selection, _ = _choose(spec, evaluator, [linear, wide])
    assert [c.trial for c in ordered] == [0, 1]
    assert selection is not None
    assert selection.winner == 0
    # A candidate without runs (the budget was spent) is not compared; one alone is simply the winner.
    unrun = Candidate(1, WIDE, 0.99)
    ordered, selection, _ = _choose(spec, evaluator, [linear, unrun])
    assert ordered == [linear, unrun]
    assert selection is None
