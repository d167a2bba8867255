"""`tunelab tune` with population-based training: the spec, the scheduler it builds, and a whole run."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.errors import SpecError
from tunelab.execute import PBT_MIN_POPULATION
from tunelab.search import PbtScheduler, SearchSpace, SearchSpec
from tunelab.spec import PER_MEMBER_PATHS

runner = CliRunner()


def test_make_scheduler_builds_pbt_that_perturbs_only_per_member_parameters():
    """Structural parameters (batch size, optimizer, widths) are shared within a population and shape its
    tensors, so PBT never changes them; the rest it may."""
    search = SearchSpec.model_validate(
        {
            "space": {
                "train.lr": {"float": [1e-4, 1e-1], "log": True},
                "model.dropout": {"float": [0.0, 0.5]},
                "train.optimizer": {"choice": ["adam", "sgd"]},
                "train.batch_size": {"choice": [32, 64]},
                "model.activation": {"choice": ["relu", "gelu"]},
            },
            "scheduler": {"name": "pbt", "perturbation_interval": 3, "quantile_fraction": 0.5},
        }
    )
    scheduler = search.make_scheduler(12, "maximize", per_member_paths=PER_MEMBER_PATHS, seed=7)
    assert isinstance(scheduler, PbtScheduler)
    assert sorted(scheduler.mutable) == ["model.dropout", "train.lr"]
    assert (scheduler.perturbation_interval, scheduler.quantile_fraction) == (3, 0.5)
    assert scheduler.resample_probability == 0.25  # the default
    assert scheduler.direction == "maximize"
    # Seeded: the same seed explores the same way, another seed differently.
    start = {"train.lr": 0.01, "model.dropout": 0.2}
    again = search.make_scheduler(12, "maximize", per_member_paths=PER_MEMBER_PATHS, seed=7)
    other = search.make_scheduler(12, "maximize", per_member_paths=PER_MEMBER_PATHS, seed=8)
    draws = [[s.explore(start) for _ in range(6)] for s in (scheduler, again, other)]  # type: ignore[union-attr]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_pbt_settings_are_checked_when_the_spec_is_read():
    space = {"train.lr": {"float": [1e-4, 1e-1], "log": True}}
    assert (
        SearchSpec.model_validate({"space": space, "scheduler": {"name": "pbt"}}).scheduler.quantile_fraction
        == 0.25
    )
    for search, fragment in [
        ({"scheduler": {"name": "pbt"}, "fused": "off"}, "fused 'off'"),
        ({"scheduler": {"name": "pbt", "min_epochs": 2}}, "min_epochs"),
        ({"scheduler": {"name": "hyperband", "resample_probability": 0.5}}, "only apply to scheduler 'pbt'"),
        ({"scheduler": {"name": "pbt", "resample_probability": 1.5}}, "resample_probability"),
    ]:
        with pytest.raises((SpecError, ValueError), match=fragment):
            SearchSpec.model_validate({"space": space, **search})


@pytest.mark.timeout(300)
def test_tune_with_pbt_end_to_end(tmp_path):
    """A PBT study on digits through the CLI: one population of four trained side by side (fused whatever
    `fused: auto` would measure), exploits recorded with the trials, and selection, refit and summary on
    the values each trial ended with."""
    spec = {
        "name": "pbt-digits",
        "data": {"source": "digits", "max_rows": 500},
        "model": {"type": "mlp", "hidden": [16]},
        "train": {"epochs": 4, "batch_size": 64},
        "search": {
            "space": {
                "train.lr": {"float": [3e-4, 3e-2], "log": True},
                "model.dropout": {"float": [0.0, 0.3]},
            },
            "scheduler": {"name": "pbt", "perturbation_interval": 2},
            "n_trials": 4,
            "top_k": 4,
            "n_seeds": 1,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    result = runner.invoke(app, ["tune", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())

    protocol = summary["protocol"]
    assert protocol["scheduler"] == "pbt"
    assert "not replayed" in protocol["pbt"]
    assert protocol["fusion"]["fused"] is True
    assert "scheduler pbt" in protocol["fusion"]["reason"]
    assert protocol["fusion"]["population_size"] >= PBT_MIN_POPULATION

    study = optuna.load_study(study_name="pbt-digits", storage=f"sqlite:///{out / 'study.db'}")
    trials = {t.number: t for t in study.trials}
    assert len({t.user_attrs["population"] for t in trials.values()}) == 1  # one PBT population of four
    space = SearchSpace.from_dict(spec["search"]["space"])
    exploited = 0
    for candidate in summary["candidates"]:
        trial = trials[candidate["trial"]]
        records = trial.user_attrs.get("pbt_exploits") or []
        initial = space.overrides_from_params(trial.params)
        if records:  # re-evaluated with the values it ended with; its start is kept beside them
            exploited += 1
            assert candidate["params"] == records[-1]["params"]
            assert candidate["params"] != initial
            assert candidate["initial_params"] == initial
            assert candidate["pbt_exploits"] == len(records)
        else:
            assert candidate["params"] == initial
            assert "initial_params" not in candidate
    assert exploited >= 1
    winner = summary["candidates"][0]
    assert summary["best_params"] == winner["params"]
    assert summary["best_trial"] == winner["trial"]
    if "initial_params" in winner:
        assert summary["best_initial_params"] == winner["initial_params"]
        assert "ended with under PBT" in summary["best_params_are"]
    else:
        assert "best_params_are" not in summary
    # The exported model is the refit of the winner's final values.
    metadata = json.loads((out / "best" / "metadata.json").read_text())
    assert metadata["spec"]["train"]["lr"] == pytest.approx(winner["params"]["train"]["lr"])
    assert metadata["spec"]["model"]["dropout"] == pytest.approx(winner["params"]["model"]["dropout"])
