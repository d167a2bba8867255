"""`Evaluator.run` when a callback cuts the training within an epoch (the time budget): nothing, unless the
caller asks for the model as cut (the search's first trial, cut before any trial completed)."""

from __future__ import annotations

from tunelab.execute import Evaluator
from tunelab.spec import parse_spec
from tunelab.train import Callback


class _CutInEpoch(Callback):
    """Ends the training after the first minibatch of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, epoch: int, step: int) -> bool | None:
        return epoch == self.epoch


def test_a_run_cut_within_an_epoch_is_scored_only_when_asked():
    spec = parse_spec(
        {
            "name": "cut",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 5, "batch_size": 16},
        }
    )
    evaluator = Evaluator(spec, spec.data)
    assert evaluator.run(spec, None, "val_accuracy", callbacks=(_CutInEpoch(2),)) is None
    run = evaluator.run(
        spec, None, "val_accuracy", callbacks=(_CutInEpoch(2),), score_interrupted=lambda: True
    )
    assert run is not None
    assert run.trainer is not None
    assert run.trainer.history.interrupted_in == 2
    assert len(run.trainer.history.epochs) == 1  # the cut epoch is not in the history
    assert 0.0 <= run.score <= 1.0
    assert run.best_epoch == 1
    assert run.outputs.shape == (len(evaluator.bundle(None).y_val), 3)
    # Not asked (the time budget cut a trial while another had completed): nothing to score.
    assert (
        evaluator.run(
            spec, None, "val_accuracy", callbacks=(_CutInEpoch(2),), score_interrupted=lambda: False
        )
        is None
    )
