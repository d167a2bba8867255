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
