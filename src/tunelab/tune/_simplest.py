"""The winner among the re-evaluated candidates: the simplest within one standard error of the best mean.

The best mean over fresh runs is measured on a few hundred validation rows, often fewer; a candidate a hair
behind it may be as good a model, and the simpler of two equally good models is the safer choice (it varies
less with the training rows) and the cheaper one to run. The one-standard-error rule (Breiman et al., 1984;
Hastie, Tibshirani and Friedman, *The Elements of Statistical Learning*, section 7.10; glmnet's
``lambda.1se``) delivers the candidate with the fewest trainable parameters among those whose mean is within
one standard error of the best. The standard error is that of the paired difference between the candidate
and the best: a bootstrap over the validation rows (each fold's rows resampled within the fold), each
candidate scored as the mean of its runs, as its mean is. Measured: on the CO2 series the linear model on lags
(about 0.303 RMSE on held-out months) lost the best mean to MLPs by less than the noise of the validation
months, and those MLPs scored 0.2995 to 0.3072 on the test months.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tunelab.execute import Evaluator, SearchPlan, output_dim, trial_spec
from tunelab.models import build_model
from tunelab.search import Events
from tunelab.spec import ExperimentSpec
from tunelab.train import metric_from_row_means
from tunelab.tune._ensemble import Member, member_validation
from tunelab.tune._result import Candidate, Selection

__all__ = ["BOOTSTRAPS", "SIMPLEST_RULE", "choose_simplest"]

BOOTSTRAPS = 200  # resamplings of the validation rows behind each standard error
SIMPLEST_RULE = (
    "the candidate with the fewest trainable parameters among those whose mean is within one standard error "
    f"of the best mean (the paired difference, a bootstrap of {BOOTSTRAPS} resamplings of the validation "
    "rows); the best mean among equals"
)


def choose_simplest(
    spec: ExperimentSpec,
    candidates: list[Candidate],
    evaluator: Evaluator,
    plan: SearchPlan,
    events: Events,
    *,
    bootstraps: int = BOOTSTRAPS,
) -> tuple[list[Candidate], Selection | None]:
    """``candidates`` (best mean first) with the winner first (module docstring), and how it was chosen;
    unchanged and ``None`` when fewer than two candidates have runs whose outputs were kept."""
    width = candidates[0].runs[0].outputs[0].shape[-1] if candidates[0].runs else None
    ranked = [c for c in candidates if c.runs and all(r.outputs[0].shape[-1] == width for r in c.runs)]
    if len(ranked) < 2 or ranked[0] is not candidates[0]:
        return candidates, None
    sign = 1.0 if plan.direction == "maximize" else -1.0
    generator = torch.Generator().manual_seed(spec.train.seed)
    sizes = [len(evaluator.bundle(fold).y_val) for fold in plan.folds]
    # One resampling of every fold's validation rows per bootstrap: the rows drawn, [B, N_f] per fold.
    picks = [torch.randint(n, (bootstraps, n), generator=generator) for n in sizes]
    terms = _row_terms(spec, ranked, evaluator, plan)
    if terms is not None:  # the metric is a mean over rows: each resampling reweights the rows' terms
        key = plan.metric.removeprefix("val_")
        weights = [_row_weights(p, n) for p, n in zip(picks, sizes, strict=True)]
        uniform = [np.full((1, n), 1.0 / n) for n in sizes]
        point = [sign * _score(key, runs, uniform)[0] for runs in terms]
        resampled = [sign * _score(key, runs, weights) for runs in terms]
    else:  # f1, roc_auc, r2: scored afresh on each resampling's rows
        point, resampled = _rescored(spec, ranked, evaluator, plan, picks)
    differences = [point[0] - p for p in point]
    spread = [resampled[0] - r for r in resampled]
    bundle = evaluator.bundle(None)
    parameters, difference, error = {}, {}, {}
    for c, candidate in enumerate(ranked):
        final = trial_spec(spec, candidate.params)
        model = build_model(
            final.model,
            input_shape=bundle.input_shape,
            output_dim=output_dim(bundle, final.train),
            seed=0,
            text=bundle.text,
        )
        parameters[candidate.trial] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if c:
            difference[candidate.trial] = float(differences[c])
            finite = spread[c][np.isfinite(spread[c])]
            error[candidate.trial] = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    within = [
        c
        for c in range(len(ranked))
        if c == 0
        or (
            math.isfinite(difference[ranked[c].trial])
            and difference[ranked[c].trial] <= error[ranked[c].trial]
        )
    ]
    chosen = min(within, key=lambda c: (parameters[ranked[c].trial], c))
    winner, top = ranked[chosen], ranked[0]
    if chosen == 0:
        reason = (
            f"trial {top.trial} has the best mean, and none within one standard error of it has fewer "
            "parameters"
        )
    else:
        reason = (
            f"trial {winner.trial} ({parameters[winner.trial]:,} parameters) is within one standard error "
            f"({error[winner.trial]:.3g}) of the best mean, trial {top.trial}'s ({parameters[top.trial]:,} "
            f"parameters; {difference[winner.trial]:.3g} better), and the simpler"
        )
    events.phase(f"selection: {reason}")
    selection = Selection(SIMPLEST_RULE, top.trial, winner.trial, reason, parameters, difference, error)
    return [winner] + [c for c in candidates if c is not winner], selection


def _row_terms(
    spec: ExperimentSpec, ranked: list[Candidate], evaluator: Evaluator, plan: SearchPlan
) -> list[list[list[np.ndarray]]] | None:
    """Per candidate, per run, per fold: the metric's row terms on that fold's validation rows (``[N_f,
    K]``, ``metric_row_terms``); None when the metric is not a mean over rows."""
    key = plan.metric.removeprefix("val_")
    judge = trial_spec(spec, ranked[0].params)
    trainers = [evaluator.trainer(judge, evaluator.bundle(fold)) for fold in plan.folds]
    found: list[list[list[np.ndarray]]] = []
    for candidate in ranked:
        runs = []
        for run in candidate.runs:
            folds = []
            for f, fold in enumerate(plan.folds):
                row_terms = trainers[f].metric_terms(run.outputs[f], evaluator.bundle(fold).y_val, key)
                if row_terms is None:
                    return None
                folds.append(row_terms)
            runs.append(folds)
        found.append(runs)
    return found


def _row_weights(picks: torch.Tensor, n: int) -> np.ndarray:
    """How often each of ``n`` rows was drawn in each resampling (``picks``: ``[B, n]``), over ``n``."""
    counts = torch.zeros(picks.shape[0], n, dtype=torch.float64)
    counts.scatter_add_(1, picks, torch.ones(picks.shape, dtype=torch.float64))
    return (counts / n).numpy()


def _score(key: str, runs: list[list[np.ndarray]], weights: list[np.ndarray]) -> np.ndarray:
    """A candidate's score under each row weighting (``[B]``): per run the mean over folds of the metric of
    its weighted row terms, then the mean over runs (as the candidate's mean is made)."""
    per_run = [
        sum(metric_from_row_means(key, w @ t) for w, t in zip(weights, folds, strict=True)) / len(folds)
        for folds in runs
    ]
    return np.asarray(sum(per_run) / len(per_run))


def _rescored(
    spec: ExperimentSpec,
    ranked: list[Candidate],
    evaluator: Evaluator,
    plan: SearchPlan,
    picks: list[torch.Tensor],
) -> tuple[list[float], list[np.ndarray]]:
    """Utilities (higher is better) on all rows and on each resampling, scoring the metric afresh on the
    rows it drew (``picks``, ``[B, N_f]`` per fold): for metrics that are not means over rows."""
    members = [Member(c, i, run.seed) for c in ranked for i, run in enumerate(c.runs)]
    validation = member_validation(
        spec, members, evaluator, folds=plan.folds, metric=plan.metric, direction=plan.direction
    )
    of = [[m for m, member in enumerate(members) if member.candidate is c] for c in ranked]

    def utility(c: int, rows: list[torch.Tensor]) -> float:
        return sum(validation.single(m, rows) for m in of[c]) / len(of[c])

    everything = validation.all_rows()
    point = [utility(c, everything) for c in range(len(ranked))]
    resampled = np.empty((len(ranked), picks[0].shape[0]))
    for b in range(picks[0].shape[0]):
        rows = [p[b] for p in picks]
        for c in range(len(ranked)):
            resampled[c, b] = utility(c, rows)
    return point, list(resampled)
