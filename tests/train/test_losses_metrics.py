"""Losses give their documented per-sample values; metrics equal scikit-learn's, in original units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from tunelab.errors import SpecError
from tunelab.train import (
    Trainer,
    TrainSpec,
    compute_metrics,
    make_loss,
    metric_from_row_means,
    metric_row_terms,
    output_dim_for,
)


def test_label_smoothing_gives_the_documented_loss():
    logits, target, eps = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]), 0.1
    log_p = [2.0 - math.log(math.exp(2) + math.exp(1) + 1), 1.0 - math.log(math.exp(2) + math.exp(1) + 1)]
    log_p.append(-math.log(math.exp(2) + math.exp(1) + 1))
    # (1 - eps) * -log p_y + eps * mean_c(-log p_c)
    documented = (1 - eps) * -log_p[0] + eps * -sum(log_p) / 3
    loss = make_loss("classification", "cross_entropy", label_smoothing=eps)(logits, target)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(documented, rel=1e-6)
    plain = make_loss("classification")(logits, target).item()
    assert plain == pytest.approx(-log_p[0], rel=1e-6)


def test_bce_smoothing_is_the_two_class_rule():
    logit, eps = 1.5, 0.2
    p = 1 / (1 + math.exp(-logit))
    target = 1 - eps + eps / 2  # y * (1 - eps) + eps / 2 with y = 1
    documented = -(target * math.log(p) + (1 - target) * math.log(1 - p))
    loss = make_loss("classification", "bce", label_smoothing=eps)(torch.tensor([[logit]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(documented, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "per_value"),
    [("mse", lambda d: d**2), ("mae", abs), ("huber", lambda d: 0.5 * d**2 if abs(d) < 1 else abs(d) - 0.5)],
)
def test_regression_losses_are_per_sample_means_over_targets(name, per_value):
    output = torch.tensor([[0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    target = torch.tensor([[0.5, 0.0], [1.0, 4.0], [0.0, 0.0]])
    loss = make_loss("regression", name)(output, target)
    expected = [np.mean([per_value(o - t) for o, t in zip(row_o, row_t, strict=True)])
                for row_o, row_t in zip(output.tolist(), target.tolist(), strict=True)]  # fmt: skip
    assert loss.tolist() == pytest.approx(expected)


def test_losses_must_fit_the_task():
    with pytest.raises(SpecError, match="Valid losses for regression: auto, mse, mae, huber"):
        make_loss("regression", "cross_entropy")
    with pytest.raises(SpecError, match="label_smoothing"):
        make_loss("regression", "mse", label_smoothing=0.1)
    with pytest.raises(SpecError, match="unknown task 'clasification'"):
        make_loss("clasification")


def test_output_dim_for():
    assert output_dim_for("classification", 10, None, "auto") == 10
    assert output_dim_for("classification", 2, None, "bce") == 1
    assert output_dim_for("regression", None, 3, "mse") == 3
    assert output_dim_for("forecasting", None, 12) == 12
    with pytest.raises(SpecError, match=r"bce.*3 classes"):
        output_dim_for("classification", 3, None, "bce")


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    prob = torch.softmax(torch.tensor(rng.normal(size=(200, 4))), dim=1)
    y = torch.tensor(rng.integers(0, 4, 200))
    got = compute_metrics(["accuracy", "f1", "roc_auc"], prob, y, n_classes=4)
    pred = prob.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, prob.numpy(), multi_class="ovr"))
    known = compute_metrics(["accuracy"], torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]),
                            torch.tensor([0, 1, 1, 0]))  # fmt: skip
    assert known["accuracy"] == 0.75


def test_binary_roc_auc_matches_sklearn_and_is_nan_with_one_class():
    p1 = torch.tensor([0.1, 0.4, 0.35, 0.8])
    prob = torch.stack([1 - p1, p1], dim=1)
    y = torch.tensor([0, 0, 1, 1])
    assert compute_metrics(["roc_auc"], prob, y)["roc_auc"] == pytest.approx(0.75)
    assert math.isnan(compute_metrics(["roc_auc"], prob, torch.zeros(4, dtype=torch.long))["roc_auc"])


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    true, pred = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    got = compute_metrics(["rmse", "mae", "r2"], torch.tensor(pred), torch.tensor(true))
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(true, pred))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(true, pred))
    assert got["r2"] == pytest.approx(skm.r2_score(true, pred))


def test_regression_metrics_and_predictions_are_in_original_units():
    # An identity model: predictions equal the (standardized) inputs.
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    x = torch.tensor([[0.0], [1.0], [-1.0], [2.0]])
    y = torch.tensor([[0.5], [1.0], [-2.0], [2.0]])  # standardized; errors 0.5, 0, 1, 0
    mean, std = 10.0, 3.0
    trainer = Trainer(model, TrainSpec(), task="regression", target_scale=(mean, std))
    result = trainer.evaluate(x, y)
    assert result["mae"] == pytest.approx(std * (0.5 + 0 + 1 + 0) / 4)
    assert result["rmse"] == pytest.approx(std * math.sqrt((0.25 + 1) / 4))
    assert result["loss"] == pytest.approx((0.25 + 1) / 4)  # the loss stays in training (standardized) units
    torch.testing.assert_close(trainer.predict(x), x * std + mean)


def test_metrics_must_fit_the_task():
    with pytest.raises(SpecError, match=r"do not apply to a regression task.*rmse, mae, r2"):
        Trainer(nn.Linear(2, 1), TrainSpec(metrics=["accuracy"]), task="regression")


@pytest.mark.parametrize(
    ("name", "shape"), [("accuracy", (40, 3)), ("rmse", (40, 2)), ("rmse", (40, 1)), ("mae", (40, 2))]
)
def test_row_terms_averaged_give_the_metric_and_reweighted_the_bootstraps(name, shape):
    generator = torch.Generator().manual_seed(0)
    if name == "accuracy":
        prediction = torch.softmax(torch.randn(shape, generator=generator), dim=1)
        target = torch.randint(0, shape[1], (shape[0],), generator=generator)
    else:
        prediction, target = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    terms = metric_row_terms(name, prediction, target)
    assert terms is not None
    whole = metric_from_row_means(name, terms.mean(axis=0))
    assert whole == pytest.approx(compute_metrics([name], prediction, target)[name], rel=1e-9)
    rows = torch.randint(0, shape[0], (shape[0],), generator=generator)  # a resampling, repeats and all
    counts = np.bincount(rows.numpy(), minlength=shape[0]) / shape[0]
    resampled = metric_from_row_means(name, counts @ terms)
    assert resampled == pytest.approx(compute_metrics([name], prediction[rows], target[rows])[name], rel=1e-9)
    assert metric_row_terms("f1", prediction, target) is None
