"""optimizer lbfgs: full-batch L-BFGS trains a convex model to its optimum, the one closed-form and
scikit-learn's solvers reach; weight decay is the L2 penalty ``weight_decay / 2 * |w|^2`` on weights only."""

from __future__ import annotations

from functools import partial

import numpy as np
import optuna
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from tunelab.data import prepare_data
from tunelab.errors import SpecError
from tunelab.execute import choose_fusion, trial_spec
from tunelab.models import build_model
from tunelab.spec import parse_spec
from tunelab.train import Trainer, TrainSpec
from tunelab.tune import tune_experiment


def _linear(n_features: int, n_outputs: int) -> torch.nn.Module:
    return build_model({"type": "mlp", "hidden": []}, input_shape=(n_features,), output_dim=n_outputs, seed=0)


def _fit(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, task: str, weight_decay: float) -> Trainer:
    spec = TrainSpec(optimizer="lbfgs", lr=1e-3, epochs=10, weight_decay=weight_decay)
    trainer = Trainer(model, spec, task=task)
    target = torch.from_numpy(y)
    trainer.fit((torch.from_numpy(x.astype(np.float32)), target))
    return trainer


def test_a_linear_model_trained_with_lbfgs_is_ridge_regression():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    alpha = 5.0
    ridge = Ridge(alpha=alpha).fit(X, y)
    # mean((Xw + b - y)^2) + lambda / 2 |w|^2 has the minimum of Ridge's |y - Xw - b|^2 + alpha |w|^2
    # at lambda = 2 alpha / n
    model = _linear(10, 1)
    _fit(model, X, y.astype(np.float32)[:, None], task="regression", weight_decay=2 * alpha / len(X))
    np.testing.assert_allclose(model[-1].weight.detach().numpy()[0], ridge.coef_, rtol=1e-3, atol=1e-4)
    assert float(model[-1].bias.detach()) == pytest.approx(ridge.intercept_, abs=1e-4)


def test_a_linear_classifier_trained_with_lbfgs_is_logistic_regression():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    C = 0.5
    reference = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(X, y)
    model = _linear(30, 2)
    # Two softmax rows w0, w1 penalized alike end at w0 = -w1, so their difference is logistic regression's
    # weight vector with half the penalty: lambda = 2 / (C n).
    trainer = _fit(model, X, y.astype(np.int64), task="classification", weight_decay=2 / (C * len(X)))
    weight = model[-1].weight.detach().numpy()
    np.testing.assert_allclose(weight[1] - weight[0], reference.coef_[0], rtol=2e-2, atol=2e-3)
    assert trainer.history.epochs[0]["loss"] > 5 * trainer.history.epochs[-1]["loss"]


def test_lbfgs_trials_train_alone_beside_fused_populations(tmp_path):
    """A space that may draw L-BFGS still fuses its other trials: the probe measures a population of them,
    and each L-BFGS trial is a pack of one, trained by the sequential executor."""
    space = {
        "train.optimizer": {"choice": ["adamw", "lbfgs"]},
        "train.lr": {"float": [1e-3, 1e-1], "log": True},
    }
    raw = {
        "name": "mixed",
        "data": {"source": "iris"},
        "model": {"type": "mlp", "hidden": [8]},
        "train": {"epochs": 3},
        "search": {
            "space": space,
            "n_trials": 6,
            "fused": "on",
            "population_size": 3,
            "top_k": 1,
            "n_seeds": 1,
        },
    }
    spec = parse_spec(raw)
    bundle = prepare_data(spec.data, seed=0)
    decision = choose_fusion(spec.search, bundle, make_spec=partial(trial_spec, spec))
    assert decision.fused
    raw["search"]["first_trials"] = [{"train.optimizer": "lbfgs", "train.lr": 0.01}]
    result = tune_experiment(parse_spec(raw), out_dir=tmp_path / "run")
    study = optuna.load_study(study_name="mixed", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    packs: dict[int, list[str]] = {}
    for trial in study.trials:
        packs.setdefault(trial.user_attrs["population"], []).append(trial.params["train.optimizer"])
    assert packs[study.trials[0].user_attrs["population"]] == ["lbfgs"]  # the first trial, alone
    assert all(set(pack) == {"adamw"} or pack == ["lbfgs"] for pack in packs.values())
    assert any(len(pack) > 1 for pack in packs.values())  # the others fused
    assert result.trials.n_finished == 6
    pbt = parse_spec(
        {
            **raw,
            "search": {**raw["search"], "scheduler": {"name": "pbt"}, "population_size": 4, "n_trials": 8},
        }
    )
    with pytest.raises(SpecError, match="L-BFGS"):
        choose_fusion(pbt.search, bundle, make_spec=partial(trial_spec, spec))


def test_lbfgs_refuses_amp():
    with pytest.raises(ValueError, match="lbfgs does not take amp"):
        TrainSpec(optimizer="lbfgs", amp=True)
