"""Schedulers driven by a simulated backend with a fake clock: many trials with known curves, in milliseconds.

The simulator is the executor half of "the scheduler decides, the backend executes": it starts trials on
``n_workers`` fake workers, advances a clock by each epoch's duration, reports the known curve values and
obeys
the decisions. The checks compare every decision with the algorithms' definitions.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.errors import SpecError
from tunelab.search import SearchSpace
from tunelab.search.schedulers import (
    AshaScheduler,
    BaseScheduler,
    Decision,
    Exploit,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    PbtScheduler,
    bracket_sizes,
    n_continuing,
    rung_levels,
)
from tunelab.search.schedulers._hyperband import smooth_weighted_cycle


@dataclass
class SimResult:
    log: list[tuple[float, int, int, float, Decision]] = field(
        default_factory=list
    )  # clock, trial, epoch, value
    status: dict[int, str] = field(default_factory=dict)
    epochs: dict[int, int] = field(default_factory=dict)
    clock: float = 0.0

    def decisions(self, trial: int) -> list[tuple[int, Decision]]:
        return [(epoch, d) for _, t, epoch, _, d in self.log if t == trial]


def simulate(
    scheduler: BaseScheduler,
    curves: list[list[float]],
    *,
    n_workers: int = 1,
    epoch_seconds: list[float] | None = None,
) -> SimResult:
    """Run every curve as a trial (curve i: values after epochs 1..len) on ``n_workers`` fake workers."""
    durations = epoch_seconds or [1.0] * len(curves)
    result = SimResult()
    events: list[tuple[float, int, int]] = []  # (clock when the epoch ends, start order, trial)
    waiting = list(range(len(curves)))

    def start(clock: float) -> None:
        trial = waiting.pop(0)
        scheduler.on_trial_start(trial, {})
        result.epochs[trial] = 0
        heapq.heappush(events, (clock + durations[trial], trial, trial))

    for _ in range(min(n_workers, len(curves))):
        start(0.0)
    while events:
        clock, _, trial = heapq.heappop(events)
        result.clock = clock
        result.epochs[trial] += 1
        epoch = result.epochs[trial]
        value = curves[trial][epoch - 1]
        decision = scheduler.on_report(trial, epoch, value)
        result.log.append((clock, trial, epoch, value, decision))
        if decision is Decision.STOP or epoch == len(curves[trial]):
            status = "pruned" if decision is Decision.STOP else "complete"
            scheduler.on_trial_end(trial, status)
            result.status[trial] = status
            if waiting:
                start(clock)
        else:
            heapq.heappush(events, (clock + durations[trial], trial, trial))
    return result


def reference_rung_decisions(result: SimResult, levels: list[int], eta: int) -> list[tuple[int, int, bool]]:
    """The definition, recomputed from the log: (trial, rung level, continues) for every rung reached."""
    recorded: dict[int, list[float]] = {level: [] for level in levels}
    out = []
    for _, trial, epoch, value, _ in result.log:
        if epoch in recorded:
            scores = sorted([*recorded[epoch], value])
            recorded[epoch].append(value)
            out.append((trial, epoch, value <= scores[max(1, len(scores) // eta) - 1]))
    return out


# -- rung arithmetic -----------------------------------------------------------------------------------------


@given(r=st.integers(1, 20), eta=st.integers(2, 5), k=st.integers(0, 6), extra=st.integers(0, 50))
def test_rung_levels_are_r_times_eta_powers_below_max(r, eta, k, extra):
    max_resource = r * eta**k + 1 + extra
    levels = rung_levels(r, max_resource, eta)
    assert levels == [r * eta**i for i in range(len(levels))]
    assert levels[-1] < max_resource <= levels[-1] * eta
    assert len(levels) == math.ceil(math.log(max_resource / r, eta) - 1e-12)


@given(n=st.integers(1, 10_000), eta=st.integers(2, 6))
def test_top_one_over_eta_continue_and_at_least_one(n, eta):
    m = n_continuing(n, eta)
    assert 1 <= m <= n
    assert m == (n // eta if n >= eta else 1)


def test_rung_levels_by_hand():
    assert rung_levels(1, 27, 3) == [1, 3, 9]
    assert rung_levels(1, 28, 3) == [1, 3, 9, 27]
    assert rung_levels(2, 20, 2) == [2, 4, 8, 16]


# -- ASHA ----------------------------------------------------------------------------------------------------


def test_asha_promotions_by_hand():
    """One worker, constant curves: trial i reports the same value at every epoch. eta=3, rungs [1, 3]."""
    values = [5.0, 3.0, 8.0, 1.0, 9.0, 2.0, 7.0, 4.0, 6.0]
    result = simulate(AshaScheduler(max_resource=9), [[v] * 9 for v in values])
    at_rung_1 = {t: d for _, t, e, _, d in result.log if e == 1}
    # n results so far -> top max(1, n // 3) continue:
    # 5 (n=1, best) P | 3 (n=2, best) P | 8 (n=3, top1=3) S | 1 P | 9 S | 2 (n=6, top2=[1,2]) P
    # 7 (n=7, top2) S | 4 (n=8, top2) S | 6 (n=9, top3=[1,2,3]) S
    expected = "PPSPSPSSS"
    assert "".join("P" if at_rung_1[t] is Decision.PROMOTE else "S" for t in range(9)) == expected
    at_rung_3 = {t: d for _, t, e, _, d in result.log if e == 3}
    # Reaching rung 3 in order 0, 1, 3, 5 with values 5, 3, 1, 2: best so far, best, best,
    # then n=4, top 1 = [1] -> stop.
    assert [at_rung_3[t] for t in (0, 1, 3, 5)] == [Decision.PROMOTE] * 3 + [Decision.STOP]
    assert {t for t, s in result.status.items() if s == "complete"} == {0, 1, 3}
    # Between rungs the answer is CONTINUE.
    assert {d for _, _, e, _, d in result.log if e not in (1, 3)} == {Decision.CONTINUE}


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.lists(st.floats(0, 10), min_size=9, max_size=9), min_size=1, max_size=25),
    n_workers=st.integers(1, 4),
    durations=st.lists(st.floats(0.1, 3.0), min_size=25, max_size=25),
)
def test_asha_matches_definition_for_any_curves_and_workers(data, n_workers, durations):
    scheduler = AshaScheduler(min_resource=1, max_resource=9, reduction_factor=3)
    result = simulate(scheduler, data, n_workers=n_workers, epoch_seconds=durations[: len(data)])
    for trial, level, continues in reference_rung_decisions(result, [1, 3], 3):
        decision = dict(result.decisions(trial))[level]
        assert decision is (Decision.PROMOTE if continues else Decision.STOP)


def _parallel_curves(bases: list[float], n_epochs: int) -> list[list[float]]:
    """Learning curves that never cross: a common decreasing shape shifted by each trial's base."""
    return [[base + 10.0 / epoch for epoch in range(1, n_epochs + 1)] for base in bases]


@settings(max_examples=40, deadline=None)
@given(
    bases=st.lists(st.floats(0, 100), min_size=2, max_size=30, unique=True),
    n_workers=st.integers(1, 4),
    maximize=st.booleans(),
)
def test_asha_and_hyperband_never_stop_the_best_of_non_crossing_curves(bases, n_workers, maximize):
    """When curves never cross, the eventual best is the best at every rung, so the definition keeps it."""
    sign = -1.0 if maximize else 1.0
    curves = [[sign * v for v in curve] for curve in _parallel_curves(bases, 27)]
    best = min(range(len(bases)), key=lambda i: bases[i])
    direction = "maximize" if maximize else "minimize"
    for scheduler in (
        AshaScheduler(max_resource=27, direction=direction),
        HyperbandScheduler(max_resource=27, direction=direction),
    ):
        result = simulate(scheduler, curves, n_workers=n_workers)
        assert result.status[best] == "complete"


def test_asha_direction_maximize_mirrors_minimize():
    values = [5.0, 3.0, 8.0, 1.0, 9.0, 2.0, 7.0, 4.0, 6.0]
    low = simulate(AshaScheduler(max_resource=9), [[v] * 9 for v in values])
    high = simulate(AshaScheduler(max_resource=9, direction="maximize"), [[-v] * 9 for v in values])
    assert [d for *_, d in low.log] == [d for *_, d in high.log]


def test_asha_keeps_stopping_a_stopped_trial():
    scheduler = AshaScheduler(max_resource=9)
    assert scheduler.on_report(0, 1, 1.0) is Decision.PROMOTE
    assert scheduler.on_report(1, 1, 5.0) is Decision.STOP
    assert scheduler.on_report(1, 2, 0.0) is Decision.STOP


def test_asha_records_every_rung_a_sparse_reporter_crosses():
    scheduler = AshaScheduler(max_resource=27)
    assert scheduler.on_report(0, 5, 1.0) is Decision.PROMOTE  # crossed rungs 1 and 3 at once
    assert scheduler.rungs.scores_at(0) == [1.0]
    assert scheduler.rungs.scores_at(1) == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_resource": 9, "min_resource": 9}, "must be below max_resource"),
        ({"max_resource": 9, "reduction_factor": 1}, "reduction_factor must be a whole number >= 2"),
        ({"max_resource": 0}, "max_resource must be a whole number >= 1"),
        ({"max_resource": 9, "direction": "max"}, "'minimize' or 'maximize'"),
    ],
)
def test_asha_rejects_bad_settings(kwargs, message):
    with pytest.raises(SpecError, match=message):
        AshaScheduler(**kwargs)


# -- Hyperband -----------------------------------------------------------------------------------------------


def test_hyperband_bracket_sizes_follow_li_et_al():
    # s_max = 3 for R/r = 27, eta = 3: n = ceil(4/4*27), ceil(4/3*9), ceil(4/2*3), ceil(4/1*1).
    assert bracket_sizes(1, 27, 3) == [27, 12, 6, 4]
    assert bracket_sizes(1, 81, 3) == [81, 34, 15, 8, 5]
    assert bracket_sizes(1, 8, 2) == [8, 6, 4, 4]


def test_hyperband_brackets_have_their_own_rungs():
    scheduler = HyperbandScheduler(max_resource=27)
    assert [b.levels for b in scheduler.brackets] == [[1, 3, 9], [3, 9], [9], []]


@given(weights=st.lists(st.integers(1, 30), min_size=1, max_size=6))
def test_smooth_weighted_cycle_gives_each_bracket_its_budget_and_spreads_it(weights):
    cycle = smooth_weighted_cycle(weights)
    assert Counter(cycle) == dict(enumerate(weights))
    total = sum(weights)
    for prefix in range(1, total + 1):  # every prefix stays within one pick of its proportional share
        counts = Counter(cycle[:prefix])
        for i, w in enumerate(weights):
            assert abs(counts[i] - prefix * w / total) < len(weights)


def test_hyperband_assignment_by_hand_and_by_number():
    # Weights 27, 12, 6, 4 (total 49). Each step adds the weights to the running scores, picks the largest and
    # subtracts 49 from it: [27,12,6,4]->0, [5,24,12,8]->1, [32,-13,18,12]->0, [10,-1,24,16]->2,
    # [37,11,-19,20]->0, [15,23,-13,24]->3, [42,35,-7,-21]->0, [20,47,-1,-17]->1.
    scheduler = HyperbandScheduler(max_resource=27)
    first = [scheduler.bracket_of(i) for i in range(8)]
    assert first == [0, 1, 0, 2, 0, 3, 0, 1]
    assert [scheduler.bracket_of(i + 49) for i in range(8)] == first  # a function of the trial number


def test_hyperband_trials_compete_only_within_their_bracket():
    """Bracket 3 (min resource 27 = max) has no rung: its trials are never stopped, however bad."""
    scheduler = HyperbandScheduler(max_resource=27)
    bad_in_last_bracket = [i for i in range(49) if scheduler.bracket_of(i) == 3]
    curves = [[1000.0 if i in bad_in_last_bracket else float(i)] * 27 for i in range(49)]
    result = simulate(scheduler, curves, n_workers=3)
    assert all(result.status[i] == "complete" for i in bad_in_last_bracket)
    for s, bracket in enumerate(scheduler.brackets):  # and each bracket follows ASHA's rule on its own trials
        members = {i for i in range(49) if scheduler.bracket_of(i) == s}
        sub = SimResult(log=[e for e in result.log if e[1] in members])
        for trial, level, continues in reference_rung_decisions(sub, bracket.levels, 3):
            assert dict(sub.decisions(trial))[level] is (Decision.PROMOTE if continues else Decision.STOP)


# -- results that arrive together (a fused population's members end an epoch at once) ----------------------


@given(
    scores=st.lists(st.floats(-100, 100), min_size=1, max_size=12),
    earlier=st.lists(st.floats(-100, 100), max_size=8),
    eta=st.integers(2, 4),
)
def test_results_that_arrive_together_are_ranked_together(scores, earlier, eta):
    """At a rung, a group's results are all recorded before the cut: the best max(1, n // eta) of everything
    recorded there (earlier results included) continue, whatever order the group lists them in."""
    for order in (list(range(len(scores))), list(reversed(range(len(scores))))):
        scheduler = AshaScheduler(max_resource=9, reduction_factor=eta)
        for i, score in enumerate(earlier):
            scheduler.on_report(1000 + i, 1, score)
        decisions = scheduler.on_reports([(i, 1, scores[i]) for i in order])
        everything = sorted([*earlier, *scores])
        cutoff = everything[n_continuing(len(everything), eta) - 1]
        for i, decision in zip(order, decisions, strict=True):
            assert decision is (Decision.PROMOTE if scores[i] <= cutoff else Decision.STOP)


def test_a_group_at_the_first_rung_keeps_its_top_third_not_its_first_reporters():
    """One by one, the first of eight to report continues whatever its value (it is the best so far); ranked
    together, exactly the best two of the eight continue (8 // 3)."""
    values = [5.0, 4.0, 9.0, 1.0, 7.0, 2.0, 8.0, 6.0]  # minimize: trials 3 and 5 are the best
    one_by_one = AshaScheduler(max_resource=9)
    alone = [one_by_one.on_report(i, 1, v) for i, v in enumerate(values)]
    assert alone[0] is Decision.PROMOTE
    together = AshaScheduler(max_resource=9).on_reports([(i, 1, v) for i, v in enumerate(values)])
    assert [i for i, d in enumerate(together) if d is Decision.PROMOTE] == [3, 5]
    # A later group is cut against everything recorded at the rung: of the 16 results the best 5 (1, 1.5, 2,
    # 2.5, 4) continue, so from the later group 1.5 and 2.5.
    scheduler = AshaScheduler(max_resource=9)
    scheduler.on_reports([(i, 1, v) for i, v in enumerate(values)])
    later = scheduler.on_reports([(10 + i, 1, v + 0.5) for i, v in enumerate(values)])
    assert [10 + i for i, d in enumerate(later) if d is Decision.PROMOTE] == [13, 15]
    # Between rungs, and for a trial already stopped, the answers are those of on_report.
    assert scheduler.on_reports([(3, 2, 0.0), (0, 2, 0.0)]) == [Decision.CONTINUE, Decision.STOP]


def test_hyperband_ranks_a_group_within_each_bracket():
    scheduler = HyperbandScheduler(max_resource=27)
    trials = list(range(16))
    values = {t: float((t * 7) % 16) for t in trials}
    decisions = dict(zip(trials, scheduler.on_reports([(t, 1, values[t]) for t in trials]), strict=True))
    reference = HyperbandScheduler(max_resource=27)
    for s, bracket in enumerate(reference.brackets):
        members = [t for t in trials if scheduler.bracket_of(t) == s]
        if not members:
            continue
        expected = bracket.report_many([(t, 1, values[t]) for t in members])
        assert [decisions[t] for t in members] == expected
        if 1 in bracket.levels:  # only bracket 0 has a rung at epoch 1
            kept = sorted(members, key=values.__getitem__)[: n_continuing(len(members), 3)]
            assert {t for t in members if decisions[t] is Decision.PROMOTE} == set(kept)
        else:
            assert all(decisions[t] is Decision.CONTINUE for t in members)


def test_schedulers_without_a_group_rule_answer_each_report_in_turn():
    values = [3.0, 1.0, 2.0, 5.0]
    for make in (lambda: MedianStoppingScheduler(n_startup_trials=1, grace_epochs=1), NoScheduler):
        one_by_one, together = make(), make()
        for epoch in (1, 2):
            expected = [one_by_one.on_report(i, epoch, v) for i, v in enumerate(values)]
            assert together.on_reports([(i, epoch, v) for i, v in enumerate(values)]) == expected


# -- median stopping -----------------------------------------------------------------------------------------


def test_median_stopping_by_hand():
    scheduler = MedianStoppingScheduler(n_startup_trials=3, grace_epochs=2)
    # Three completed trials; running averages at epoch 2: (4+2)/2=3, (6+4)/2=5, (8+6)/2=7 -> median 5.
    result = simulate(scheduler, [[4, 2, 1], [6, 4, 3], [8, 6, 5]])
    assert set(result.status.values()) == {"complete"}
    assert scheduler.on_report(10, 1, 100.0) is Decision.CONTINUE  # grace epoch
    assert scheduler.on_report(10, 2, 5.0) is Decision.CONTINUE  # best so far 5 is not worse than 5
    assert scheduler.on_report(11, 1, 9.0) is Decision.CONTINUE
    assert scheduler.on_report(11, 2, 5.5) is Decision.STOP  # best so far 5.5 > 5
    assert scheduler.on_report(12, 4, 0.0) is Decision.CONTINUE  # no completed trial reached epoch 4


def test_median_stopping_waits_for_enough_completed_trials():
    scheduler = MedianStoppingScheduler(n_startup_trials=2)
    simulate(scheduler, [[1.0, 1.0]])
    assert scheduler.on_report(5, 1, 99.0) is Decision.CONTINUE


# -- PBT -----------------------------------------------------------------------------------------------------


def _pbt(**kwargs):
    space = SearchSpace.from_dict(
        {
            "train.lr": {"float": [1e-4, 1.0], "log": True},
            "train.optimizer": {"choice": ["adam", "sgd"]},
            "model.n_layers": {"int": [1, 4]},
        }
    )
    return PbtScheduler(space, perturbation_interval=2, quantile_fraction=0.25, seed=7, **kwargs)


def _start_population(scheduler: PbtScheduler, lrs: list[float]) -> None:
    for trial, lr in enumerate(lrs):
        scheduler.on_trial_start(trial, {"train": {"lr": lr, "optimizer": "adam"}, "model": {"n_layers": 2}})


def test_pbt_bottom_quantile_exploits_top_and_perturbs_by_0_8_or_1_2():
    scheduler = _pbt(resample_probability=0.0)
    assert scheduler.mutable == ["train.lr", "train.optimizer"]  # n_layers is structural: never mutated
    _start_population(scheduler, [0.1, 0.01, 0.001, 0.0001 * 5])
    losses = [1.0, 2.0, 3.0, 4.0]
    decisions = {t: scheduler.on_report(t, 1, losses[t]) for t in range(4)}
    assert set(decisions.values()) == {Decision.CONTINUE}  # not a perturbation epoch
    decisions = {t: scheduler.on_report(t, 2, losses[t]) for t in range(4)}
    # n = 4, q = ceil(4 * 0.25) = 1: only trial 3, the worst, exploits the best, trial 0.
    assert all(decisions[t] is Decision.CONTINUE for t in (0, 1, 2))
    exploit = decisions[3]
    assert isinstance(exploit, Exploit)
    assert exploit.decision is Decision.EXPLOIT
    assert exploit.source_trial_id == 0
    assert exploit.new_params["train"]["lr"] / 0.1 == pytest.approx(0.8) or exploit.new_params["train"][
        "lr"
    ] / 0.1 == pytest.approx(1.2)
    assert exploit.new_params["train"]["optimizer"] == "adam"
    assert exploit.new_params["model"] == {"n_layers": 2}


def test_pbt_clips_to_bounds_and_is_seeded():
    scheduler = _pbt(resample_probability=0.0)
    explored = [scheduler.explore({"train.lr": 1.0})["train.lr"] for _ in range(20)]
    assert set(explored) <= {0.8, 1.0}  # 1.2 is clipped to the upper bound
    again = _pbt(resample_probability=0.0)
    assert [again.explore({"train.lr": 1.0})["train.lr"] for _ in range(20)] == explored


def test_pbt_resampling_stays_in_the_space():
    scheduler = _pbt(resample_probability=1.0)
    for _ in range(50):
        new = scheduler.explore({"train.lr": 0.01, "train.optimizer": "adam"})
        assert 1e-4 <= new["train.lr"] <= 1.0
        assert new["train.optimizer"] in ("adam", "sgd")


def test_pbt_needs_two_live_trials_and_forgets_ended_ones():
    scheduler = _pbt()
    _start_population(scheduler, [0.1, 0.01])
    assert scheduler.on_report(0, 2, 1.0) is Decision.CONTINUE  # alone: q = min(ceil(0.25), 0) = 0
    scheduler.on_trial_end(0, "complete")
    assert scheduler.on_report(1, 2, 9.0) is Decision.CONTINUE


def test_pbt_rejects_structural_mutables():
    with pytest.raises(SpecError, match=r"cannot mutate 'model\.widths'"):
        PbtScheduler(
            SearchSpace.from_dict(
                {"model.n": {"int": [1, 3]}, "model.widths": {"int": [8, 64], "per_layer": "model.n"}}
            ),
            mutable=["model.widths"],
        )


def test_no_scheduler_always_continues():
    result = simulate(NoScheduler(), [[float(i)] * 5 for i in range(6)], n_workers=2)
    assert set(result.status.values()) == {"complete"}
