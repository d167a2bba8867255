"""The CUDA path of fused populations: equivalence, isolation and a whole fused study on a GPU.

Marked ``cuda`` and deselected by default (CI has no GPU): run with ``pytest -m cuda`` on a machine with one.
Without CUDA every test here fails at once, with that reason, rather than passing or skipping silently.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from tests.fused.test_equivalence import CASES, K, check_equivalence
from tests.fused.test_functional import check_functional_population
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.fused import PopAdam, PopSGD, Population, PopulationTrainer

pytestmark = pytest.mark.cuda

CUDA_MODELS = ["mlp", "cnn", "lstm_bidirectional_2layer", "gru_2layer_mean"]


@pytest.fixture(autouse=True)
def _cuda_without_tf32():
    """Full fp32 arithmetic, as on the CPU: cuDNN's convolutions default to TF32, whose rounding differs
    between a grouped convolution and K separate ones far beyond fp32 tolerance."""
    assert torch.cuda.is_available(), "these tests need a CUDA GPU (torch.cuda.is_available() is False)"
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True  # the same convolution algorithms from run to run
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
    torch.backends.cudnn.deterministic = deterministic


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", CUDA_MODELS)
def test_member_trained_in_a_cuda_population_matches_training_alone_on_cuda(
    kind, case, build_model, data_for
):
    """A member is its lone twin, in float64 (the same code paths; on CUDA ``auto`` picks the [K, M] foreach
    optimizer). In float32 the batched kernels (bmm, one convolution over K*C channels) round differently
    from K separate ones, and the normalizing optimizers blow that up where a gradient is near zero: on an
    H100 the bias-free convolution before batch norm ended up to 9e-3 from its twin under Adagrad and
    RMSprop (the CPU test at 1e-5 passes because its kernels round alike). The fp32 kernels are checked
    against the CPU below.

    The lone recurrent models run PyTorch's own cells, not cuDNN's, whose LSTM/GRU kernels are not plain
    fp32 arithmetic (a bidirectional 2-layer LSTM after two epochs of RMSprop differed from its population
    twin by up to 0.075 with cuDNN, 9e-7 without; Adam 0.015 and 6e-8)."""
    recurrent = kind not in ("mlp", "cnn")
    with torch.backends.cudnn.flags(enabled=not recurrent):
        check_equivalence(
            kind, case, "auto", build_model, data_for, device="cuda", dtype=torch.float64, atol=1e-9
        )


@pytest.mark.parametrize("case", ["sgd_nesterov", "adam", "adagrad"])
def test_explicit_fused_kernels_per_member_work_on_cuda(case, build_model, data_for):
    check_equivalence("mlp", case, "fused", build_model, data_for, device="cuda", atol=1e-4)
    check_equivalence(
        "cnn", case, "fused", build_model, data_for, device="cuda", dtype=torch.float64, atol=1e-9
    )


def test_a_cuda_population_matches_the_same_population_on_the_cpu(build_model, data_for):
    x, y = data_for("cnn", n=32)
    results = []
    for device in ("cpu", "cuda"):
        population = Population.from_modules([build_model("cnn", seed=k) for k in range(K)]).to(device)
        trainer = PopulationTrainer(
            population, PopAdam(population.parameters(), n_members=K, lr=[1e-2, 3e-3, 1e-3])
        )
        trainer.fit(x.to(device), y.to(device), n_epochs=2, batch_size=8, seed=3)
        results.append([population.member(k).to("cpu").state_dict() for k in range(K)])
    for cpu_member, cuda_member in zip(*results, strict=True):
        for name, value in cpu_member.items():
            torch.testing.assert_close(cuda_member[name], value, atol=1e-4, rtol=1e-3, msg=name)


def test_diverging_members_on_cuda_leave_the_others_as_without_them(build_model, data_for):
    x, y = (tensor.to("cuda") for tensor in data_for("mlp_plain", n=32))

    def train(seeds, lrs):
        models = [build_model("mlp_plain", seed=s).to("cuda") for s in seeds]
        population = Population.from_modules(models)
        optimizer = PopSGD(population.parameters(), n_members=len(seeds), lr=lrs, momentum=0.9)
        trainer = PopulationTrainer(population, optimizer)
        trainer.fit(x, y, n_epochs=3, batch_size=8, seed=0)
        return trainer, population

    trainer, population = train([0, 1, 2, 3], [0.01, 1e6, 0.02, 1e7])
    assert trainer.alive.tolist() == [True, False, True, False]
    assert trainer.alive.device.type == "cuda"
    _, alone = train([0, 2], [0.01, 0.02])
    for ours, theirs in [(0, 0), (2, 1)]:
        for name, value in alone.member(theirs).state_dict().items():
            assert bool(torch.isfinite(value).all())
            torch.testing.assert_close(population.member(ours).state_dict()[name], value, msg=name)
    losses = trainer.evaluate(x, y)["loss"]
    assert math.isnan(losses[1].item())
    assert math.isnan(losses[3].item())


@pytest.mark.timeout(300)
def test_a_fused_study_runs_on_cuda_end_to_end(tmp_path):
    """`tunelab tune` with `train.device: cuda` and forced fusion: populations train on the GPU, the winner
    is refit and exported, and `predict` applies it."""
    spec = {
        "name": "cuda-digits",
        "data": {"source": "digits"},
        "model": {"type": "mlp", "hidden": [64]},
        "train": {"epochs": 5, "batch_size": 64, "device": "cuda"},
        "search": {
            "space": {
                "train.lr": {"float": [1e-3, 3e-2], "log": True},
                "model.dropout": {"float": [0.0, 0.3]},
            },
            "fused": "on",
            "population_size": 8,
            "n_trials": 16,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["tune", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["fusion"]["fused"] is True
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 16
    assert summary["best_value"] > 0.9
    assert summary["test_metrics"]["accuracy"] > 0.9


def test_a_users_module_trains_as_a_functional_population_on_cuda():
    """The torch.func path (stack_module_state, functional_call, vmap) on CUDA: the same check as the CPU's
    in test_functional.py."""
    check_functional_population("cuda")


def test_the_fusion_probe_measures_on_the_trials_device():
    """`fused: auto` probes the throughput of populations on the device the trials train on (the probe fed
    CPU batches to CUDA populations once)."""
    from tunelab.execute import measure_throughput
    from tunelab.models import MLPSpec
    from tunelab.train import TrainSpec

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 20, generator=generator), torch.randint(0, 3, (512,), generator=generator)
    rates = measure_throughput(
        MLPSpec(hidden=[32]),
        TrainSpec(device="cuda", batch_size=64),
        (x, y),
        input_shape=(20,),
        output_dim=3,
        task="classification",
        seconds=0.15,
    )
    assert rates["sequential"] > 0
    assert rates["K=1"] > 0
    assert rates["K=2"] > rates["K=1"]


def test_train_cuda_graphs_false_turns_recording_off_in_a_search():
    from tunelab.execute import SpecPopulation
    from tunelab.models import MLPSpec
    from tunelab.train import TrainSpec

    for cuda_graphs in (True, False):
        train = TrainSpec(device="cuda", cuda_graphs=cuda_graphs)
        population = SpecPopulation(
            [MLPSpec(hidden=[8])] * 2, [train] * 2, input_shape=(4,), output_dim=3, task="classification"
        )
        assert (population.trainer.graph is not None) is cuda_graphs
