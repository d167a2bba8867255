"""Text models with the bag encoder train as fused populations through the study loop, each trial's value
the one its configuration gets trained alone; other text encoders are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState
from tests._text import topic_texts

from tunelab.errors import SpecError
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


def test_a_text_search_fuses_its_bags_and_trains_the_other_encoders_alone(tmp_path, text_csv):
    from tunelab.data import prepare_data
    from tunelab.execute import PopulationExecutor, SequentialExecutor, choose_fusion
    from tunelab.tune import default_experiment

    spec = parse_spec(default_experiment({"source": str(text_csv), "target": "label"}, kind="text"))
    assert {"bag", "cnn", "gru"} <= set(spec.search.search_space()["model.encoder"].choices)
    bundle = prepare_data(spec.data, seed=0)
    sized = spec.search.model_copy(update={"population_size": 3})
    decision = choose_fusion(sized, bundle, make_spec=lambda overrides: trial_spec(spec, overrides))
    assert decision.fused
    assert decision.population_size == 3
    evaluator = Evaluator(spec, spec.data)
    space = spec.search.search_space()
    executor = PopulationExecutor(
        lambda params: trial_spec(spec, space.overrides_from_params(params)),
        evaluator,
        metric="val_loss",
        population_size=3,
        alone=SequentialExecutor(spec, evaluator, metric="val_loss", run_dir=tmp_path),
    )
    first = dict(spec.search.first_trials[0])  # the zero-config bag
    cnn = {**first, "model.encoder": "cnn", "model.channels": 32}
    del cnn["model.pooling"]
    gru = {**first, "model.encoder": "gru", "model.hidden_size": 32}
    for params, cap in ((first, 3), (cnn, 1), (gru, 1)):
        assert executor.pack_size(params, cap=3, time_left=None) == cap
    pbt = type(spec.search).model_validate({**spec.search.model_dump(), "scheduler": {"name": "pbt"}})
    with pytest.raises(SpecError, match="text encoders"):
        choose_fusion(pbt, bundle, make_spec=lambda overrides: trial_spec(spec, overrides))
