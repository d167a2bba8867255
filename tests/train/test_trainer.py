"""The training loop end to end: it learns, reports, reproduces, stops when asked, and fails clearly."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.datasets import make_classification
from torch import nn

from tunelab.errors import DataError, SpecError, TrainingError
from tunelab.train import Callback, Trainer, TrainSpec


def test_digits_mlp_reaches_90_percent(mlp, digits):
    spec = TrainSpec(lr=0.01, epochs=15, batch_size=64, schedule={"name": "cosine"})
    history = Trainer(mlp(64, 10, hidden=64), spec, task="classification").fit(*digits)
    assert history.epochs[-1]["val_accuracy"] > 0.9
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]


def test_logs_hold_the_documented_keys(mlp, digits):
    history = Trainer(mlp(64, 10), TrainSpec(epochs=1), task="classification").fit(*digits)
    (row,) = history.epochs
    assert list(row) == [
        "epoch", "loss", "val_loss", "val_accuracy", "val_f1", "lr", "epoch_seconds", "samples_per_second",
    ]  # fmt: skip
    assert all(isinstance(v, float) for k, v in row.items() if k != "epoch")
    assert row["samples_per_second"] > 0


def test_history_is_json_and_a_frame(mlp, regression):
    history = Trainer(mlp(20, 1), TrainSpec(epochs=3), task="regression").fit(*regression)
    data = json.loads(json.dumps(history.to_dict()))
    assert data["monitor"] == "val_loss"
    assert data["best_epoch"] == history.best_epoch
    assert [row["epoch"] for row in data["epochs"]] == [1, 2, 3]
    frame = history.to_frame()
    assert frame.shape[0] == 3
    assert {"loss", "val_loss", "val_rmse", "val_mae", "val_r2", "lr"} <= set(frame.columns)


def test_same_seed_same_history_other_seed_another(mlp, digits, without_timings):
    def run(seed: int) -> list[dict]:
        spec = TrainSpec(epochs=2, seed=seed)
        return without_timings(Trainer(mlp(64, 10), spec, task="classification").fit(*digits).epochs)

    assert run(1) == run(1)
    assert run(1) != run(2)


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_at = stop_at

    def on_train_begin(self, logs):
        self.calls.append(("train_begin", logs["n_train"], logs["initial_epoch"]))

    def on_epoch_begin(self, epoch, logs):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs):
        logs["loss"] = -1.0  # a callback gets a copy: this must not reach History
        self.calls.append(("epoch_end", epoch))
        return epoch == self.stop_at

    def on_train_end(self, logs):
        self.calls.append(("train_end",))


def test_callbacks_are_called_in_order_and_can_stop_training(mlp, digits):
    recorder = Recorder(stop_at=2)
    trainer = Trainer(mlp(64, 10), TrainSpec(epochs=5), task="classification", callbacks=[recorder])
    history = trainer.fit(*digits)
    n_train = len(digits[0][0])
    assert recorder.calls == [
        ("train_begin", n_train, 0),
        ("epoch_begin", 1), ("epoch_end", 1),
        ("epoch_begin", 2), ("epoch_end", 2),
        ("train_end",),
    ]  # fmt: skip
    assert history.stopped_early
    assert len(history.epochs) == 2
    assert all(row["loss"] > 0 for row in history.epochs)


def test_a_diverging_run_says_where_and_what_to_try(mlp, regression):
    spec = TrainSpec(optimizer="sgd", lr=1e6, epochs=3, batch_size=32)
    with pytest.raises(TrainingError) as info:
        Trainer(mlp(20, 1), spec, task="regression").fit(*regression)
    message = str(info.value)
    assert "diverged" in message
    assert "at epoch 1, step" in message
    assert "lower learning rate" in message
    assert "grad_clip" in message
    assert "NaN" in message


def test_binary_cross_entropy_with_one_logit():
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    spec = TrainSpec(loss="bce", lr=0.05, epochs=10, metrics=["accuracy", "roc_auc"])
    torch.manual_seed(0)
    trainer = Trainer(nn.Linear(5, 1), spec, task="classification", n_classes=2)
    history = trainer.fit((X[:150], y[:150]), (X[150:], y[150:]))
    assert history.epochs[-1]["val_roc_auc"] > 0.85
    prob = trainer.predict(X[150:])
    assert prob.shape == (50, 2)
    torch.testing.assert_close(prob.sum(1), torch.ones(50))
    assert (prob.argmax(1) == y[150:]).float().mean() == pytest.approx(history.epochs[-1]["val_accuracy"])


def test_predict_returns_on_the_inputs_device_in_batches(mlp, digits):
    (X, _), _ = digits
    trainer = Trainer(mlp(64, 10), TrainSpec(epochs=1, batch_size=16), task="classification")
    big = X.repeat(2, 1)  # more rows than one evaluation batch (1024)
    prob = trainer.predict(big)
    assert prob.shape == (len(big), 10)
    assert prob.device == big.device
    torch.testing.assert_close(prob[: len(X)], prob[len(X) :])


def test_wrong_model_output_size_is_explained(digits):
    trainer = Trainer(nn.Linear(64, 7), TrainSpec(epochs=1), task="classification", n_classes=10)
    with pytest.raises(SpecError, match=r"outputs shape \[2, 7\].*output_dim=10"):
        trainer.fit(*digits)


def test_bad_inputs_are_data_errors(mlp):
    trainer = Trainer(mlp(4, 3), TrainSpec(epochs=1), task="classification", n_classes=3)
    X = torch.randn(10, 4)
    with pytest.raises(DataError, match="int64 class ids"):
        trainer.fit((X, torch.zeros(10)))
    with pytest.raises(DataError, match=r"ids from 0 to 5.*3 classes"):
        trainer.fit((X, torch.arange(10) % 6))
    X[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        trainer.fit((X, torch.arange(10) % 3))
    with pytest.raises(DataError, match="torch tensors"):
        trainer.fit((X.numpy(), torch.arange(10) % 3))
    with pytest.raises(DataError, match="10 rows and y has 9"):
        trainer.fit((X, torch.arange(9) % 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")
def test_cuda_and_amp_without_a_gpu_are_spec_errors():
    with pytest.raises(SpecError, match=r"device 'cuda'.*Use device: auto or cpu"):
        Trainer(nn.Linear(2, 2), TrainSpec(device="cuda"), task="classification")
    with pytest.raises(SpecError, match=r"amp.*CUDA only.*'cpu'"):
        Trainer(nn.Linear(2, 2), TrainSpec(amp=True), task="classification")


def test_a_lone_last_row_joins_the_previous_batch_so_batchnorm_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    trainer = Trainer(model, TrainSpec(epochs=1, batch_size=4), task="classification")
    sizes = []
    model.register_forward_pre_hook(lambda _, args: sizes.append(len(args[0])) if model.training else None)
    trainer.fit((torch.randn(9, 3), torch.arange(9) % 2))
    assert sizes == [4, 5]
