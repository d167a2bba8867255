"""A tuning run that delivers an ensemble: summary.json, best/, tunelab.load and `tunelab predict`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from typer.testing import CliRunner

import tunelab
from tunelab.cli import app
from tunelab.models import Ensemble
from tunelab.spec import parse_spec
from tunelab.tune import _ensemble, tune_experiment
from tunelab.tune._greedy import CrossFitted


def test_a_delivered_ensemble_is_exported_loaded_and_predicts_like_any_model(
    tmp_path, table_split, monkeypatch
):
    """The decision is forced here (validation says "ensemble" for every run: tests/tune/test_ensemble.py
    checks the decision itself on outputs built for it); this checks what delivering one does."""
    monkeypatch.setattr(
        _ensemble, "greedy_counts", lambda v, rows, **_: (torch.ones(v.n_members, dtype=torch.int64), 0.0)
    )
    monkeypatch.setattr(_ensemble, "cross_fitted", lambda *_, **__: CrossFitted(0.95, 0.94, 0.01, 10))
    train_csv, new_csv, _, held = table_split
    spec = parse_spec(
        {
            "name": "ens",
            "data": {"source": str(train_csv), "target": "diagnosis"},
            "model": {"type": "mlp", "hidden": [16]},
            "train": {"epochs": 4, "batch_size": 32},
            "search": {
                "space": {"train.lr": {"float": [1e-3, 3e-2], "log": True}},
                "n_trials": 3,
                "top_k": 2,
                "n_seeds": 2,
                "scheduler": {"name": "none"},
                "fused": "off",
            },
        }
    )
    out = tmp_path / "run"
    result = tune_experiment(spec, out_dir=out)
    assert isinstance(result.trainer.model, Ensemble)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["delivered"] == "ensemble"
    ensemble = summary["ensemble"]
    assert ensemble["delivered"] is True
    assert len(ensemble["members"]) == 4  # every run of the two candidates, weighted alike
    assert {m["weight"] for m in ensemble["members"]} == {0.25}
    assert ensemble["validation"]["gain"] == 0.01
    assert summary["test_metrics"] == ensemble["test_metrics"]
    assert set(ensemble["single_winner_test_metrics"]) == {"loss", "accuracy", "f1"}
    assert "ensemble" in summary["protocol"]
    # search.refit: all (the default): each member trained again on every row, with its own recipe
    assert summary["trained_on_test"] is True
    assert summary["refit_every_row"].startswith("4 models trained again on all")
    assert isinstance(result.trainer.model, Ensemble)
    assert len(result.trainer.model.members) == 4

    metadata = json.loads((out / "best" / "metadata.json").read_text())
    assert metadata["model_spec"]["type"] == "ensemble"
    assert len(metadata["model_spec"]["members"]) == 4
    assert metadata["test_metrics"] == summary["test_metrics"]
    assert metadata["files"]["torchscript"] == "model.ts"

    new_rows = pd.read_csv(new_csv)
    model = tunelab.load(out)
    labels = model.predict(new_rows)
    assert set(labels) <= {"benign", "malignant"}
    np.testing.assert_allclose(model.predict_proba(new_rows).sum(axis=1), 1.0, atol=1e-5)
    rebuilt = tunelab.load(out, backend="weights")
    np.testing.assert_allclose(rebuilt.predict_proba(new_rows), model.predict_proba(new_rows), atol=1e-5)
    assert float((labels == held["diagnosis"].to_numpy()).mean()) > 0.8

    preds_path = tmp_path / "preds.csv"
    cli = CliRunner().invoke(app, ["predict", str(out), str(new_csv), "--out", str(preds_path)])
    assert cli.exit_code == 0, cli.output
    assert pd.read_csv(preds_path)["prediction"].tolist() == labels.tolist()
    assert "Ensemble of the top candidates" in (out / "report.html").read_text()
