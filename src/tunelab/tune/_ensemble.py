"""The ensemble step: the re-evaluation runs of the top candidates, averaged, when validation says it pays.

The members are the fresh runs of re-evaluation (every candidate, every seed), whose validation outputs are
kept; weights come from greedy selection with replacement, and the ensemble is delivered only when it beats
the single winner on validation rows that did not choose it (``tunelab.tune._greedy``). Its models are then
trained as the winner's refit was (train + validation, the configuration's median best epoch count, the
run's seed); the winner's own refit stands in for one of the winner's runs. A member's refit starts only if
it fits before the deadline, about as long as its run took; if one does not, the winner is delivered and
the summary says so. Both the winner and the ensemble are tested once, after the choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from tunelab.clock import Clock, system_clock
from tunelab.execute import Evaluator, SearchPlan, output_dim, trial_spec
from tunelab.models import Ensemble, EnsembleSpec, combine_rule
from tunelab.search import Events, SearchSpec
from tunelab.spec import ExperimentSpec
from tunelab.train import Trainer
from tunelab.tune._greedy import ROUNDS, SPLITS, CrossFitted, Validation, cross_fitted, greedy_counts
from tunelab.tune._result import Candidate, EnsembleChoice, Refit
from tunelab.tune._select import final_epochs, fit_final, fmt_metrics

__all__ = [
    "ENSEMBLE_RULE",
    "Delivered",
    "Member",
    "Recipe",
    "choose_ensemble",
    "member_validation",
    "refit_on_every_row",
]

ENSEMBLE_RULE = (
    f"greedy ensemble selection with replacement ({ROUNDS} rounds, Caruana et al. 2004) on the validation "
    "loss of the re-evaluation runs' outputs (each fold's validation part; probabilities averaged for "
    "classification, outputs for regression and forecasts); delivered when it beats the single winner by "
    f"the search metric on validation rows that did not choose it ({SPLITS} random halvings: chosen on one "
    "half, scored on the other, the winner as the mean of its runs), its members refit like the winner "
    "within the budget"
)


@dataclass(frozen=True)
class Member:
    """One re-evaluation run of a candidate, as a possible ensemble member."""

    candidate: Candidate
    index: int  # which of the candidate's runs
    seed: int


@dataclass(frozen=True)
class Recipe:
    """How one delivered model was trained: the configuration, the training seed (None: the spec's), the
    epochs, and the measured seconds of one epoch on the training part."""

    params: dict[str, Any]
    seed: int | None
    epochs: int
    epoch_seconds: float


@dataclass(frozen=True)
class Delivered:
    """What ``best/`` receives: the choice, the trainer holding the delivered model, and its spec.
    ``recipes``: how each of its models was trained (one for the single winner); ``tested``: the model the
    test part scored, when the delivered one was trained on every row afterwards."""

    choice: EnsembleChoice
    trainer: Trainer
    ensemble_spec: EnsembleSpec | None
    recipes: tuple[Recipe, ...] = ()
    tested: Trainer | None = None

    @property
    def test_metrics(self) -> dict[str, float]:
        return (
            self.choice.test_metrics
            if self.choice.test_metrics is not None
            else self.choice.single_test_metrics
        )


def choose_ensemble(
    spec: ExperimentSpec,
    candidates: list[Candidate],
    refit: tuple[Refit, Trainer],
    evaluator: Evaluator,
    plan: SearchPlan,
    deadline: float | None,
    events: Events,
    *,
    clock: Clock = system_clock,
) -> Delivered:
    """Decide between the refit winner (``refit``) and an ensemble of the candidates' runs (module docstring),
    and build the ensemble when it wins. ``plan`` gives the folds, the metric and its direction; a member's
    refit starts only if it fits before ``deadline`` on ``clock``."""
    folds, metric, direction = plan.folds, plan.metric, plan.direction
    single_test, winner_trainer = refit[0].test_metrics, refit[1]
    winner_recipe = Recipe(candidates[0].params, None, refit[0].epochs, candidates[0].epoch_seconds)

    def single(reason: str, **found: Any) -> Delivered:
        events.phase(f"ensemble: {reason}")
        choice = EnsembleChoice(False, reason, single_test, **found)
        return Delivered(choice, winner_trainer, None, recipes=(winner_recipe,))

    if not (spec.search or SearchSpec()).ensemble:
        return single("off (search.ensemble: false)")
    # Members have the winner's output size (a loss in the search space may give another).
    width = candidates[0].runs[0].outputs[0].shape[-1] if candidates[0].runs else None
    members = [
        Member(c, i, run.seed)
        for c in candidates
        for i, run in enumerate(c.runs)
        if run.outputs[0].shape[-1] == width
    ]
    if len(members) < 2:
        return single(f"{len(members)} re-evaluation run(s) completed on every fold; an ensemble needs two")
    validation = member_validation(spec, members, evaluator, folds=folds, metric=metric, direction=direction)
    select = member_validation(spec, members, evaluator, folds=folds, metric="loss", direction="minimize")
    counts, _ = greedy_counts(select, select.all_rows())
    decided = cross_fitted(
        validation,
        [[m for m, member in enumerate(members) if member.candidate is c] for c in candidates],
        select=select,
        seed=spec.train.seed,
    )
    chosen = [(members[m], int(k)) for m, k in enumerate(counts) if k > 0]
    found: dict[str, Any] = {
        "members": [_record(member, k / int(counts.sum())) for member, k in chosen],
        "validation": _scores(decided, validation.score(counts, validation.all_rows())),
    }
    if len(chosen) < 2:
        return single("the greedy selection kept a single model", **found)
    if not decided.significant:
        return single(
            f"not delivered: the single winner scores {decided.single:.4g} and the ensemble "
            f"{decided.ensemble:.4g} on validation rows that did not choose them (gain {decided.gain:.3g}, "
            f"within twice its standard error {decided.gain_se:.2g} over {decided.n_halves} halves)",
            **found,
        )
    recipes = _recipes(spec, chosen, candidates[0], winner_recipe)
    trainers = _refit_members(
        spec, chosen, recipes, winner_recipe, winner_trainer, evaluator, deadline, clock
    )
    if isinstance(trainers, str):
        return single(f"validation favours it (gain {decided.gain:.3g}), but {trainers}", **found)
    ensemble_spec = EnsembleSpec(
        members=[trial_spec(spec, member.candidate.params).model for member, _ in chosen],
        weights=[k / int(counts.sum()) for _, k in chosen],
        combine=_average(evaluator),
    )
    trainer = _ensemble_trainer(ensemble_spec, trainers, evaluator, winner_trainer)
    bundle = evaluator.bundle(None)
    test = trainer.evaluate(bundle.X_test, bundle.y_test)
    for record, (member, _), model in zip(found["members"], chosen, trainers, strict=True):
        record.update(delivered_seed=model.spec.seed, epochs=final_epochs(spec, member.candidate))
    reason = f"delivered: validation gain {decided.gain:.3g} over the single winner"
    events.phase(f"ensemble of {len(chosen)} {reason}; test: {fmt_metrics(test)}")
    return Delivered(
        EnsembleChoice(True, reason, single_test, test_metrics=test, **found),
        trainer,
        ensemble_spec,
        recipes=recipes,
    )


def refit_on_every_row(
    spec: ExperimentSpec,
    delivered: Delivered,
    refit: Refit,
    evaluator: Evaluator,
    deadline: float | None,
    events: Events,
    *,
    clock: Clock = system_clock,
) -> tuple[Delivered, Refit]:
    """``search.refit: all``: train the delivered model (each ensemble member) once more, on every row
    (train + validation + test), with the recipe that was tested, when that fits before ``deadline``. The
    refit's record says what was done (``Refit.on_every_row``, ``every_row_note``); ``Delivered.tested``
    keeps the model the test part scored."""
    if (spec.search or SearchSpec()).refit != "all":
        return delivered, refit
    if not refit.on_train_and_validation:
        note = "not done: the winner was delivered as the search trained it, so there is no refit to repeat"
        return delivered, replace(refit, every_row_note=note)
    if evaluator.dataset.has_test_part:
        note = "not done: the data set brings its own test part, which stays out of training"
        return delivered, replace(refit, every_row_note=note)
    bundle = evaluator.bundle(None)
    train_rows = max(1, len(bundle.X_train))
    rows = len(bundle.X_train) + len(bundle.X_val) + len(bundle.X_test)
    seconds = sum(r.epochs * r.epoch_seconds * rows / train_rows for r in delivered.recipes)
    what = f"{len(delivered.recipes)} models" if delivered.ensemble_spec is not None else "the winner"
    if deadline is not None:
        left = deadline - clock.monotonic()
        if not math.isfinite(seconds) or seconds > left:
            takes = f"about {seconds:.3g} s" if math.isfinite(seconds) else "an untimed while"
            note = (
                f"not done: training {what} on all {rows} rows would take {takes} and the budget left "
                f"{max(left, 0.0):.1f} s; delivered: the refit on train + validation, as tested"
            )
            events.phase(f"refit on every row: {note}")
            return delivered, replace(refit, every_row_note=note)
    trainers = [
        fit_final(spec, r.params, evaluator, epochs=r.epochs, seed=r.seed, every_row=True)
        for r in delivered.recipes
    ]
    if delivered.ensemble_spec is None:
        trainer = trainers[0]
    else:
        trainer = _ensemble_trainer(delivered.ensemble_spec, trainers, evaluator, trainers[0])
    note = (
        f"{what} trained again on all {rows} rows (train + validation + test) with the tested recipe; "
        "the test metrics are that recipe's without the test rows"
    )
    events.phase(f"refit on every row: {note}")
    return (
        replace(delivered, trainer=trainer, tested=delivered.trainer),
        replace(refit, on_every_row=True, every_row_note=note),
    )


def member_validation(
    spec: ExperimentSpec,
    members: list[Member],
    evaluator: Evaluator,
    *,
    folds: list[int | None],
    metric: str,
    direction: str,
) -> Validation:
    """The members' stored outputs per fold, scored by ``metric`` as the first member's trainer computes
    it."""
    winner = trial_spec(spec, members[0].candidate.params)
    key = metric.removeprefix("val_")
    outputs, metrics = [], []
    for f, fold in enumerate(folds):
        bundle = evaluator.bundle(fold)
        outputs.append(torch.stack([m.candidate.runs[m.index].outputs[f] for m in members]))
        metrics.append(_fold_metric(evaluator.trainer(winner, bundle), bundle.y_val.cpu(), key))
    combine = combine_rule(_average(evaluator), int(outputs[0].shape[-1]))
    return Validation(outputs, metrics, combine=combine, maximize=direction == "maximize")


def _average(evaluator: Evaluator) -> Literal["probabilities", "mean"]:
    return "probabilities" if evaluator.task == "classification" else "mean"


def _fold_metric(
    trainer: Trainer, y: torch.Tensor, key: str
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    def metric(outputs: torch.Tensor, rows: torch.Tensor) -> float:
        return trainer.evaluate_outputs(outputs, y[rows], names=[key])[key]

    return metric


def _refit_members(
    spec: ExperimentSpec,
    chosen: list[tuple[Member, int]],
    recipes: tuple[Recipe, ...],
    winner_recipe: Recipe,
    winner_trainer: Trainer,
    evaluator: Evaluator,
    deadline: float | None,
    clock: Clock,
) -> list[Trainer] | str:
    """The members' final models, in order, trained by their ``recipes``; the winner's refit stands in for
    its recipe. A reason instead when one does not fit before ``deadline`` (about as long as its run took)."""
    trainers: list[Trainer] = []
    for (member, _), recipe in zip(chosen, recipes, strict=True):
        if recipe is winner_recipe:
            trainers.append(winner_trainer)
            continue
        run = member.candidate.runs[member.index]
        if deadline is not None and clock.monotonic() + run.seconds / len(run.outputs) > deadline:
            return (
                f"the budget left no time to refit its members ({len(trainers)} of {len(chosen)} models "
                "ready); the single winner is delivered"
            )
        trainers.append(fit_final(spec, recipe.params, evaluator, epochs=recipe.epochs, seed=recipe.seed))
    return trainers


def _recipes(
    spec: ExperimentSpec, chosen: list[tuple[Member, int]], winner: Candidate, winner_recipe: Recipe
) -> tuple[Recipe, ...]:
    """How each member's final model is trained: the winner's first member by the winner's refit
    (``winner_recipe`` itself), the others with their run's seed for their candidate's epochs."""
    recipes: list[Recipe] = []
    reused = False
    for member, _ in chosen:
        if member.candidate is winner and not reused:
            recipes.append(winner_recipe)
            reused = True
            continue
        candidate = member.candidate
        recipes.append(
            Recipe(candidate.params, member.seed, final_epochs(spec, candidate), candidate.epoch_seconds)
        )
    return tuple(recipes)


def _ensemble_trainer(
    ensemble_spec: EnsembleSpec, trainers: list[Trainer], evaluator: Evaluator, winner: Trainer
) -> Trainer:
    """A trainer (for evaluation, predictions and export) around the ensemble of the members' models."""
    bundle = evaluator.bundle(None)
    combine = combine_rule(ensemble_spec.combine, output_dim(bundle, winner.spec))
    module = Ensemble([t.model for t in trainers], ensemble_spec.weights, combine=combine)
    return Trainer(
        module, winner.spec, task=bundle.task, n_classes=bundle.n_classes, target_scale=bundle.target_scale
    )


def _record(member: Member, weight: float) -> dict[str, Any]:
    return {"trial": member.candidate.trial, "run_seed": member.seed, "weight": round(weight, 4)}


def _scores(decided: CrossFitted, in_sample: float) -> dict[str, float]:
    return {
        "ensemble": decided.ensemble,
        "single_winner": decided.single,
        "gain": decided.gain,
        "gain_standard_error": decided.gain_se,
        "halves": decided.n_halves,
        "ensemble_in_sample": in_sample if math.isfinite(in_sample) else math.nan,
    }
