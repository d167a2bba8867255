"""`--workers N`: N search processes share one storage safely."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tunelab.spec import parse_spec
from tunelab.tune import tune_experiment


def test_two_workers_share_one_study(tmp_path):
    spec = parse_spec(
        {
            "name": "two-workers",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 3},
            "search": {
                "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
                "n_trials": 8,
                "top_k": 1,
                "n_seeds": 1,
                "fused": "off",
            },
        }
    )
    result = tune_experiment(spec, out_dir=tmp_path / "run", workers=2)
    study = optuna.load_study(study_name="two-workers", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Each worker stops once the shared count reaches the budget: at most one extra trial per other worker.
    assert 8 <= len(finished) <= 9
    assert result.summary["protocol"]["workers"] == 2
    assert result.summary["trials"]["total"] == len(trials)
    assert (tmp_path / "run" / "best" / "metadata.json").is_file()


def test_two_workers_train_fused_populations_on_one_study(tmp_path):
    """Each worker process packs and trains its own fused populations on the shared storage: every
    population's trials share their structure and come from one process, no trial number repeats, none is
    left RUNNING, and the trial budget counts both processes' trials."""
    spec = parse_spec(
        {
            "name": "fused-workers",
            "data": {"source": "digits", "max_rows": 600},
            "model": {"type": "mlp"},
            "train": {"epochs": 3, "batch_size": 64},
            "search": {
                "space": {
                    "train.lr": {"float": [1e-3, 3e-2], "log": True},
                    "model.dropout": {"float": [0.0, 0.3]},
                    "train.batch_size": {"choice": [32, 64]},
                },
                "n_trials": 12,
                "top_k": 1,
                "n_seeds": 1,
                "fused": "on",
                "population_size": 3,
            },
        }
    )
    result = tune_experiment(spec, out_dir=tmp_path / "run", workers=2)
    study = optuna.load_study(
        study_name="fused-workers", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    )
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Each worker stops once the shared count reaches the budget; a population already started finishes.
    assert 12 <= len(finished) <= 12 + 2
    populations: dict[int, list] = {}
    for trial in trials:
        populations.setdefault(trial.user_attrs["population"], []).append(trial)
    assert any(len(members) > 1 for members in populations.values())  # really fused
    for first, members in populations.items():
        assert len({t.params["train.batch_size"] for t in members}) == 1, first
    assert result.summary["protocol"]["workers"] == 2
    assert result.summary["protocol"]["fusion"]["fused"] is True
    assert (tmp_path / "run" / "best" / "metadata.json").is_file()
