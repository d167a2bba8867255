"""Zero-config images: the search starts from a known-good CNN (the prior): one trial gives a good model."""

from __future__ import annotations

import json

import optuna

from tunelab.spec import parse_spec
from tunelab.tune import default_experiment, tune_experiment


def test_a_zero_config_image_search_trains_the_prior_first(tmp_path):
    raw = default_experiment({"source": "digits"}, kind="image", name="images")
    prior = raw["search"]["first_trials"][0]
    assert parse_spec(raw).model.batch_norm is True
    raw["search"] |= {"n_trials": 1, "fused": "off", "top_k": 1, "n_seeds": 1}
    raw["train"]["epochs"] = 1
    out = tmp_path / "run"
    tune_experiment(parse_spec(raw), out_dir=out)
    study = optuna.load_study(study_name="images", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[0].params == prior
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_params"]["model"] == {"channels": [32, 64], "dropout": 0.25}


def test_a_cnn_chosen_by_name_starts_from_the_same_prior():
    named = default_experiment({"source": "digits"}, kind="image", model="cnn")
    assert (
        named["search"]["first_trials"]
        == default_experiment({"source": "x"}, kind="image")["search"]["first_trials"]
    )
