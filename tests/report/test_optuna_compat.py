"""A study's ``study.db`` is an ordinary Optuna study: Optuna's own API, and optuna-dashboard when installed,
read back every trial tunelab ran, with its parameters (dotted names), per-epoch intermediate values, state
and value, for sequential trials and for fused populations alike (both write through write-behind storage)."""

from __future__ import annotations

import json
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tunelab.spec import parse_spec
from tunelab.tune import tune_experiment

EPOCHS = 3
SPACE = {"train.lr": {"float": [1e-3, 1e-1], "log": True}, "train.weight_decay": {"float": [1e-6, 1e-2]}}
DISTRIBUTIONS = {
    "train.lr": FloatDistribution(1e-3, 1e-1, log=True),
    "train.weight_decay": FloatDistribution(1e-6, 1e-2),
}


@pytest.fixture(
    scope="module",
    params=[{"fused": "off"}, {"fused": "on", "population_size": 2}],
    ids=["sequential", "fused"],
)
def tuned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny iris study (4 trials of 3 epochs, ASHA) and its summary."""
    spec = parse_spec(
        {
            "name": "iris-compat",
            "seed": 0,
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": EPOCHS, "batch_size": 32},
            "search": {
                "space": SPACE,
                "n_trials": 4,
                "top_k": 1,
                "n_seeds": 1,
                "scheduler": {"name": "asha", "min_epochs": 1},
                **request.param,
            },
        }
    )
    run_dir = tmp_path_factory.mktemp("compat") / "run"
    result = tune_experiment(spec, out_dir=run_dir)
    assert result.summary["protocol"]["fusion"]["fused"] is (request.param["fused"] == "on")
    return run_dir, result.summary


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="iris-compat", storage=f"sqlite:///{run_dir / 'study.db'}")


def test_optuna_lists_every_trial_the_summary_counts(tuned):
    run_dir, summary = tuned
    study = _study(run_dir)
    trials = study.get_trials()
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # val_accuracy
    assert [t.number for t in trials] == list(range(summary["trials"]["total"]))
    for state, key in (
        (TrialState.COMPLETE, "complete"),
        (TrialState.PRUNED, "pruned"),
        (TrialState.FAIL, "failed"),
    ):
        assert sum(t.state == state for t in trials) == summary["trials"][key]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert summary["trials"]["complete"] >= 1
    assert summary["trials"]["pruned"] >= 1


def test_parameters_keep_their_dotted_names_and_distributions(tuned):
    for trial in _study(tuned[0]).trials:
        assert trial.distributions == DISTRIBUTIONS
        for name, value in trial.params.items():
            assert DISTRIBUTIONS[name].low <= value <= DISTRIBUTIONS[name].high


def test_intermediate_values_are_one_per_epoch(tuned):
    for trial in _study(tuned[0]).trials:
        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps]
        assert all(0.0 <= v <= 1.0 for v in values)  # validation accuracy
        if trial.state == TrialState.COMPLETE:
            assert steps == list(range(1, EPOCHS + 1))
            # No early stopping here: the trial's value is its last epoch's validation accuracy.
            assert trial.value == pytest.approx(values[-1], abs=1e-6)
            assert trial.user_attrs["fold_values"] == [pytest.approx(trial.value)]
        else:
            assert trial.state == TrialState.PRUNED
            assert steps == list(range(1, len(steps) + 1))
            assert len(steps) < EPOCHS
            # Optuna's own convention (study.tell with state PRUNED): the last reported value is the value.
            assert trial.value == values[-1]


def test_the_summary_winner_is_an_optuna_trial(tuned):
    run_dir, summary = tuned
    winner = _study(run_dir).trials[summary["best_trial"]]
    assert winner.state == TrialState.COMPLETE
    assert summary["candidates"][0]["search_value"] == pytest.approx(winner.value)
    assert summary["best_params"] == {
        "train": {
            "lr": pytest.approx(winner.params["train.lr"]),
            "weight_decay": pytest.approx(winner.params["train.weight_decay"]),
        }
    }


def test_optuna_dashboard_reads_the_same_trials(tuned):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    run_dir, _ = tuned
    study = _study(run_dir)
    app = optuna_dashboard.wsgi(f"sqlite:///{run_dir / 'study.db'}")

    def get(path: str, query: str = "") -> dict:
        environ: dict = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"}
        setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
        assert status[0].startswith("200"), status
        return json.loads(body)

    (listed,) = get("/api/studies")["study_summaries"]
    assert listed["study_name"] == "iris-compat"
    served = sorted(get(f"/api/studies/{listed['study_id']}", "after=0")["trials"], key=lambda t: t["number"])
    assert [t["number"] for t in served] == [t.number for t in study.trials]
    for mine, theirs in zip(study.trials, served, strict=True):
        assert theirs["state"].upper() == mine.state.name
        assert {p["name"]: p["param_internal_value"] for p in theirs["params"]} == pytest.approx(mine.params)
        assert {v["step"]: v["value"] for v in theirs["intermediate_values"]} == pytest.approx(
            mine.intermediate_values
        )
        assert theirs["values"] == [pytest.approx(mine.value)]


def test_tensorboard_export_matches_the_study(tuned, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from tunelab.report._tensorboard import write_run_to_tensorboard

    run_dir = tuned[0]
    written = write_run_to_tensorboard(run_dir, tmp_path)
    trials = _study(run_dir).trials
    assert [p.name for p in written] == [f"trial_{t.number:04d}" for t in trials] + ["final"]
    for trial in trials:
        events = accumulator.EventAccumulator(str(tmp_path / f"trial_{trial.number:04d}"))
        events.Reload()
        curve = {e.step: e.value for e in events.Scalars("search/val_accuracy")}
        assert curve == pytest.approx(trial.intermediate_values, rel=1e-6)
