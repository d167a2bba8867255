"""Text models with the bag encoder train as fused populations through the study loop, each trial's value
the one its configuration gets trained alone; other text encoders are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState
from tests._text import topic_texts

from tunelab.execute import Evaluator, trial_spec
from tunelab.execute._fusion import fusion_blocker
from tunelab.search import SearchSpace
from tunelab.spec import parse_spec


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "reviews.csv"
    topic_texts(300).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("pooling", ["mean", "mean_max"])
def test_bag_members_match_the_same_config_trained_alone(tmp_path, run_populations, text_csv, pooling):
    spec = parse_spec(
        {
            "name": "text-pop",
            "data": {"source": str(text_csv), "target": "label"},
            "model": {"type": "text", "encoder": "bag", "embedding_dim": 16, "pooling": pooling},
            "train": {"epochs": 4, "batch_size": 32, "optimizer": "adamw", "schedule": {"name": "cosine"}},
        }
    )
    evaluator = Evaluator(spec, spec.data)
    space = {
        "train.lr": {"float": [1e-3, 5e-2], "log": True},
        "train.weight_decay": {"float": [1e-5, 1e-2], "log": True},
    }
    result = run_populations(tmp_path, spec, evaluator, space, population_size=3, n_trials=3)
    trials = result.get_trials(deepcopy=False)
    assert [t.user_attrs["population"] for t in trials] == [trials[0].number] * 3  # one population of three
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        alone = trial_spec(spec, SearchSpace.from_dict(space).overrides_from_params(trial.params))
        value, _ = evaluator.score(alone, None, "val_loss")
        assert trial.value == pytest.approx(value, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("encoder", "fused"), [("bag", True), ("cnn", False), ("gru", False)])
def test_only_the_bag_encoder_may_fuse(encoder, fused):
    spec = parse_spec(
        {
            "name": "t",
            "data": {"source": "unused.csv", "target": "y"},
            "model": {"type": "text", "encoder": encoder},
        }
    )
    reason = fusion_blocker(
        mode="auto", model=spec.model, train=spec.train, task="classification", sampler="tpe"
    )
    assert (reason is None) == fused
    if not fused:
        assert reason is not None
        assert encoder in reason
