"""Early stopping stops on time and restores the best weights; checkpoints resume a run exactly."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import SpecError
from tunelab.train import Callback, EarlyStopping, History, Trainer, TrainSpec, load_checkpoint


def test_early_stopping_counts_patience_in_epochs_without_improvement():
    stopper = EarlyStopping("val_accuracy", patience=2, min_delta=0.01)  # auto mode: max for accuracy
    values = [0.50, 0.60, 0.605, 0.62, 0.59, 0.61]  # 0.605 is not better by more than min_delta
    decisions = [stopper.on_epoch_end(epoch, {"val_accuracy": v}) for epoch, v in enumerate(values, start=1)]
    assert decisions == [False, False, False, False, False, True]
    assert stopper.state.best == 0.62
    assert stopper.state.best_epoch == 4


@pytest.fixture
def shuffled_val(digits):
    """Validation labels permuted: the more the model learns, the worse its validation loss gets."""
    train, (X_val, y_val) = digits
    return train, (X_val, y_val[torch.randperm(len(y_val), generator=torch.Generator().manual_seed(0))])


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_stops_after_patience_and_restores_the_best(restore_best, mlp, shuffled_val, tmp_path):
    train, val = shuffled_val
    early = {"monitor": "val_loss", "patience": 3, "restore_best": restore_best}
    spec = TrainSpec(lr=0.01, epochs=40, batch_size=64, early_stopping=early)
    trainer = Trainer(mlp(64, 10), spec, task="classification", run_dir=tmp_path)
    history = trainer.fit(train, val)

    val_losses = [row["val_loss"] for row in history.epochs]
    best = history.best_epoch
    assert best == val_losses.index(min(val_losses)) + 1
    assert len(history.epochs) == best + 3 < 40
    assert history.stopped_early
    final_loss = trainer.evaluate(*val)["loss"]
    if restore_best:
        assert final_loss == pytest.approx(val_losses[best - 1], rel=1e-6)
        saved = load_checkpoint(tmp_path / "best.pt")
        assert saved["epoch"] == best
        for name, tensor in trainer.model.state_dict().items():
            torch.testing.assert_close(tensor, saved["model"][name], rtol=0, atol=0)
    else:
        assert final_loss == pytest.approx(val_losses[-1], rel=1e-6)


def test_monitor_must_be_logged(mlp, digits):
    train, _ = digits
    spec = TrainSpec(epochs=1, early_stopping={"monitor": "val_accuracy"})
    with pytest.raises(SpecError, match=r"no validation data.*Valid monitors: loss"):
        Trainer(mlp(64, 10), spec, task="classification").fit(train)
    spec = TrainSpec(epochs=1, early_stopping={"monitor": "val_acc"})
    with pytest.raises(SpecError, match=r"val_acc.*val_loss, val_accuracy, val_f1"):
        Trainer(mlp(64, 10), spec, task="classification").fit(*digits)


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        return epoch == self.epoch


def test_resume_equals_an_uninterrupted_run(mlp, shuffled_val, tmp_path, without_timings):
    # Every piece of state at once: dropout RNG, batch order, noise augmentation, a per-step schedule,
    # Adam's moments, early-stopping state and the best weights to restore (an early epoch's: shuffled_val).
    digits = shuffled_val
    spec = TrainSpec(
        lr=0.01, epochs=6, batch_size=128, schedule={"name": "cosine"}, augment={"noise_std": 0.05},
        early_stopping={"patience": 10, "restore_best": True},
    )  # fmt: skip
    whole = Trainer(mlp(64, 10, dropout=0.3), spec, task="classification")
    expected = whole.fit(*digits)

    interrupted = Trainer(mlp(64, 10, dropout=0.3), spec, task="classification", callbacks=[StopAfter(3)],
                          run_dir=tmp_path)  # fmt: skip
    assert len(interrupted.fit(*digits).epochs) == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3

    resumed = Trainer(
        mlp(64, 10, dropout=0.3, seed=99), spec, task="classification"
    )  # other init: overwritten
    history = resumed.fit(*digits, resume_from=tmp_path / "checkpoint.pt")
    assert without_timings(history.epochs) == without_timings(expected.epochs)
    assert (history.best_epoch, history.stopped_early) == (expected.best_epoch, False)
    assert expected.best_epoch <= 3  # so the resumed run must restore weights saved before the interruption
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_run_dir_checkpoints_load_without_pickle(mlp, digits, tmp_path):
    spec = TrainSpec(epochs=5, checkpoint_every=2)
    history = Trainer(mlp(64, 10), spec, task="classification", run_dir=tmp_path).fit(*digits)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no pickled objects inside
    assert raw["epoch"] == 5  # every 2 epochs, and at the end
    assert raw["history"]["epochs"] == history.to_dict()["epochs"]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == history.best_epoch
    assert not list(tmp_path.glob("*.partial"))


def test_resume_refuses_a_changed_spec(mlp, digits, tmp_path):
    Trainer(mlp(64, 10), TrainSpec(epochs=1), task="classification", run_dir=tmp_path).fit(*digits)
    trainer = Trainer(mlp(64, 10), TrainSpec(epochs=2, lr=0.1), task="classification")
    with pytest.raises(SpecError, match="differs in lr"):
        trainer.fit(*digits, resume_from=tmp_path / "checkpoint.pt")


def test_load_checkpoint_explains_bad_paths(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(SpecError, match="not a tunelab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


class CutWithin(Callback):
    """Asks to end training after step ``step`` of epoch ``epoch``; records what it sees."""

    def __init__(self, epoch: int | None, step: int | None) -> None:
        self.at = (epoch, step)
        self.steps: list[tuple[int, int]] = []
        self.end_logs: dict | None = None

    def on_batch_end(self, epoch, step):
        self.steps.append((epoch, step))
        return (epoch, step) == self.at

    def on_train_end(self, logs):
        self.end_logs = logs


def test_a_callback_can_end_training_within_an_epoch_and_the_run_resumes_exactly(
    mlp, digits, tmp_path, without_timings
):
    # 1,347 training rows in batches of 128: 11 steps an epoch.
    spec = TrainSpec(lr=0.01, epochs=4, batch_size=128, schedule={"name": "cosine"}, checkpoint_every=1)
    whole = Trainer(mlp(64, 10, dropout=0.3), spec, task="classification")
    expected = whole.fit(*digits)

    cut, watcher = CutWithin(3, 2), CutWithin(None, None)
    interrupted = Trainer(
        mlp(64, 10, dropout=0.3), spec, task="classification", callbacks=[cut, watcher], run_dir=tmp_path
    )
    history = interrupted.fit(*digits)
    assert len(history.epochs) == 2
    assert history.interrupted_in == 3
    assert cut.steps == [(e, s) for e in (1, 2) for s in range(1, 12)] + [(3, 1), (3, 2)]
    assert watcher.steps == cut.steps  # every callback sees the step on which one asks to stop
    assert cut.end_logs is not None
    assert cut.end_logs["loss"] == history.epochs[-1]["loss"]
    assert History.from_dict(history.to_dict()).interrupted_in == 3

    # The weights went on two steps past the checkpoint, which still holds epoch 2.
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["epoch"] == 2
    first = next(iter(interrupted.model.state_dict()))
    assert not torch.equal(interrupted.model.state_dict()[first], saved["model"][first])

    resumed = Trainer(mlp(64, 10, dropout=0.3, seed=99), spec, task="classification")
    resumed_history = resumed.fit(*digits, resume_from=tmp_path / "checkpoint.pt")
    assert without_timings(resumed_history.epochs) == without_timings(expected.epochs)
    assert resumed_history.interrupted_in is None
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)
