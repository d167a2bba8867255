"""CUDA graphs of the population step (``tunelab.fused._graphs``): replays give the eager steps' results.

The tests that record graphs are marked ``cuda`` (``pytest -m cuda`` on a machine with a GPU); the checks of
the setting and of the host-side flags they rely on run everywhere.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from tests.fused.conftest import SequenceModel
from torch import nn

from tunelab.errors import SpecError
from tunelab.fused import FunctionalPopulation, PopAdam, PopSGD, Population, PopulationTrainer
from tunelab.fused._hostflags import HostFlags


def _lstm(seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SequenceModel(nn.LSTM, num_layers=2, bidirectional=True, dropout=0.3)


def _model(kind: str, seed: int, build_model) -> nn.Module:
    return _lstm(seed) if kind == "lstm" else build_model(kind, seed=seed, dropout=0.3)


# -- everywhere --
def test_cuda_graphs_are_off_on_the_cpu_and_asking_for_them_there_is_an_error(build_model):
    population = Population.from_modules([build_model("mlp", seed=k) for k in range(2)])
    optimizer = PopAdam(population.parameters(), n_members=2)
    assert PopulationTrainer(population, optimizer).graph is None
    with pytest.raises(SpecError, match="needs a population on a CUDA device; this one is on cpu"):
        PopulationTrainer(population, optimizer, cuda_graphs=True)
    with pytest.raises(SpecError, match="cuda_graphs must be True, False or 'auto'; got 'yes'"):
        PopulationTrainer(population, optimizer, cuda_graphs="yes")  # type: ignore[arg-type]


def test_host_flags_snapshot_follows_in_place_writes():
    """A recording's signature holds the flags' snapshot: it must see a value written in place since."""
    flags, decay = HostFlags(), torch.zeros(3)
    assert flags.any("weight_decay", decay) is False
    assert flags.snapshot() == (("weight_decay", False),)
    decay[1] = 1e-3
    assert flags.snapshot() == (("weight_decay", True),)
    decay.zero_()
    assert flags.snapshot() == (("weight_decay", False),)


# -- on a GPU --
def _train_through_changes(kind, build_model, x, y, *, cuda_graphs: bool):
    """Epochs of a population of 4 with every in-place change a search makes between them, and one that
    changes a branch of the step (weight decay switched on) and one that replaces its tensors (shrink)."""
    population = Population.from_modules([_model(kind, k, build_model) for k in range(4)], seed=7)
    population.to("cuda")
    trainer = PopulationTrainer(
        population,
        PopAdam(population.parameters(), n_members=4, lr=[1e-2, 3e-3, 1e-3, 3e-2]),
        label_smoothing=[0.0, 0.1, 0.2, 0.0],
        clip_norm=[math.inf, 1.0, 0.5, math.inf],
        cuda_graphs=cuda_graphs,
    )
    generator = torch.Generator(device="cuda").manual_seed(3)
    losses = []

    def epochs(n: int) -> None:
        for _ in range(n):  # 40 rows in batches of 16: two full batches and one of 8
            losses.append(trainer.fit_epoch(x, y, batch_size=16, generator=generator).cpu())

    epochs(3)
    trainer.set_hparams({"lr": [5e-3, 1e-3, 2e-3, 1e-2], "dropout": [0.1, 0.0, 0.5, 0.3]})
    epochs(1)
    trainer.set_hparams({"weight_decay": [0.0, 1e-3, 1e-2, 0.0]})
    epochs(1)
    with pytest.warns(DeprecationWarning, match="refill"):
        trainer.refill(1, _model(kind, 10, build_model).to("cuda"), {"lr": 4e-3})
    trainer.exploit(0, 3)
    epochs(1)
    trainer.shrink([2, 0, 1])
    epochs(2)
    states = [population.member(k).state_dict() for k in range(population.n_members)]
    return trainer, losses, states


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm"])
def test_replayed_steps_give_the_eager_steps_results(kind, build_model, data_for):
    """Bit for bit for the MLP and the LSTM: the same kernels on the same data, whether launched one by one
    or replayed, through schedules, dropout-rate changes, a refill, PBT's exploit, a new branch and a
    shrink. The CNN within float32 rounding: cuDNN may pick another convolution algorithm while recording
    (seen on an H100 even with TF32 off)."""
    assert torch.cuda.is_available(), "this test needs a CUDA GPU"
    tolerance = 1e-5 if kind == "cnn" else 0.0
    x, y = data_for("lstm_bidirectional_2layer" if kind == "lstm" else kind, n=40)
    x, y = x.to("cuda"), y.to("cuda")
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        eager, eager_losses, eager_states = _train_through_changes(kind, build_model, x, y, cuda_graphs=False)
        graphed, graphed_losses, graphed_states = _train_through_changes(
            kind, build_model, x, y, cuda_graphs=True
        )
    assert eager.graph is None
    assert graphed.graph is not None
    # Recorded anew for the full and the last batch, after weight decay switched on and after the shrink.
    counts = (graphed.graph.n_recordings, graphed.graph.n_replays)
    assert graphed.graph.n_recordings == 6, counts
    assert graphed.graph.n_replays >= 12, counts
    assert graphed.n_steps == eager.n_steps == 8 * 3
    for epoch, (ours, theirs) in enumerate(zip(graphed_losses, eager_losses, strict=True)):
        difference = float((ours - theirs).abs().max())
        assert difference <= tolerance, f"epoch {epoch}: losses differ by {difference}"
    for k, (ours, theirs) in enumerate(zip(graphed_states, eager_states, strict=True)):
        for name in theirs:
            difference = float((ours[name].double() - theirs[name].double()).abs().max())
            assert difference <= tolerance, f"member {k} {name}: differs by {difference}"


@pytest.mark.cuda
def test_members_diverge_at_the_same_step_with_graphs(build_model, data_for):
    x, y = (tensor.to("cuda") for tensor in data_for("mlp_plain", n=32))
    results = []
    for cuda_graphs in (False, True):
        population = Population.from_modules([build_model("mlp_plain", seed=k) for k in range(4)]).to("cuda")
        optimizer = PopSGD(population.parameters(), n_members=4, lr=[0.01, 1e6, 0.02, 1e7], momentum=0.9)
        trainer = PopulationTrainer(population, optimizer, cuda_graphs=cuda_graphs)
        trainer.fit(x, y, n_epochs=3, batch_size=8, seed=0)
        results.append((trainer.alive.tolist(), trainer.diverged_at_step.tolist(), population.state_dict()))
    (alive, diverged, eager), (graphed_alive, graphed_diverged, graphed) = results
    assert alive == graphed_alive == [True, False, True, False]
    assert diverged == graphed_diverged
    assert min(diverged[1], diverged[3]) >= 0
    for name, value in eager.items():
        torch.testing.assert_close(graphed[name], value, rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.mark.cuda
def test_a_functional_population_runs_eagerly_by_default(build_model):
    """It reseeds its random stream in each forward pass, which a recording would freeze."""
    population = FunctionalPopulation([build_model("mlp", seed=k) for k in range(2)]).to("cuda")
    trainer = PopulationTrainer(population, PopAdam(population.parameters(), n_members=2))
    assert trainer.graph is None


@pytest.mark.cuda
def test_asking_to_record_what_cannot_be_recorded_says_what_to_do():
    """Per-member fused kernels read on the host which members are alive, which a recording forbids. In a
    child process: a failed recording leaves CUDA's default generator unusable for the rest of the process."""
    script = textwrap.dedent(
        """
        import torch
        from torch import nn
        from tunelab.errors import TrainingError
        from tunelab.fused import PopAdam, Population, PopulationTrainer

        models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).cuda() for _ in range(2)]
        population = Population.from_modules(models)
        optimizer = PopAdam(population.parameters(), n_members=2, implementation="fused")
        trainer = PopulationTrainer(population, optimizer, cuda_graphs=True)
        x, y = torch.randn(8, 4, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
        try:
            for _ in range(3):
                trainer.train_step(x, y)
        except TrainingError as error:
            print("TrainingError:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TrainingError: recording the population's training step as a CUDA graph failed" in result.stdout
    assert "cuda_graphs='auto'" in result.stdout
