"""The torch.func path for users' modules, and the up-front fusibility check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.errors import SpecError
from tunelab.fused import FunctionalPopulation, PopAdam, Population, PopulationTrainer, can_fuse, fuse


class Residual(nn.Module):
    """A user's module that population layers do not cover (LayerNorm, a skip connection)."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.inp(x))
        return self.out(h + self.block(h))


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.lin(x)) * 2


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.lin(x)
        return y if y.sum() > 0 else -y


class OwnLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.lstm(x)[0].amax(dim=1))  # max-pooling: not the rnn -> pooling -> head contract


def _seeded(factory, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


def _train_alone(model: nn.Module, x: Tensor, y: Tensor, *, lr: float) -> nn.Module:
    """Three epochs of Adam in batches of 8, in the order PopulationTrainer.fit(seed=0) draws them."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), 8):
            index = order[start : start + 8]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model


def test_functional_population_matches_each_module_forward_and_training():
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    population = FunctionalPopulation([_seeded(Residual, k) for k in range(3)])
    for k in range(3):
        torch.testing.assert_close(population(x)[k], _seeded(Residual, k)(x))
    lrs = [1e-2, 3e-3, 3e-2]
    PopulationTrainer(population, PopAdam(population.parameters(), n_members=3, lr=lrs)).fit(
        x, y, n_epochs=3, batch_size=8
    )
    for k in range(3):
        model = _train_alone(_seeded(Residual, k), x, y, lr=lrs[k])
        exported = population.member(k).state_dict()
        for name, value in model.state_dict().items():
            torch.testing.assert_close(exported[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_functional_population_keeps_per_member_batchnorm_statistics():
    models = [_seeded(WithBatchNorm, k) for k in range(2)]
    population = FunctionalPopulation(models)
    x = torch.randn(10, 6)
    out = population(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x))
        torch.testing.assert_close(population.member(k).bn.running_mean, model.bn.running_mean)
    assert not torch.equal(population.member(0).bn.running_mean, population.member(1).bn.running_mean)


def test_functional_dropout_differs_per_member_follows_the_seed_and_spares_the_global_rng():
    models = [Residual(dropout=0.5) for _ in range(2)]
    population = FunctionalPopulation(models, seed=3)
    population.load_member(1, models[0])  # identical weights: only the dropout masks can differ
    x = torch.randn(4, 6)
    state = torch.get_rng_state()
    out = population(x)
    assert not torch.equal(out[0], out[1])
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(FunctionalPopulation(models, seed=3)(x)[0], FunctionalPopulation(models, seed=3)(x)[0])
    population.eval()
    assert torch.equal(population(x)[0], population(x)[1])


def test_can_fuse_explains_what_cannot_be_batched(build_model, data_for):
    x, _ = data_for("lstm_bidirectional_2layer", n=4)
    ok, reason = can_fuse(build_model("lstm_bidirectional_2layer", seed=0), x)
    assert ok
    assert "population layers" in reason
    ok, reason = can_fuse(Residual(), torch.randn(4, 6))
    assert ok
    assert "torch.func" in reason
    assert "Residual is not one of the supported structures" in reason
    ok, reason = can_fuse(OwnLSTM(), x)
    assert not ok
    assert "'lstm' is an nn.LSTM" in reason
    assert "batching rule" in reason
    ok, reason = can_fuse(DataDependent(), torch.randn(4, 6))
    assert not ok
    assert "data-dependent control flow" in reason


def test_can_fuse_rejects_a_sequence_model_whose_forward_differs_from_its_structure(data_for):
    class MaxPooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.pooling = "last"
            self.head = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.rnn(x)[0].amax(dim=1))

    ok, reason = can_fuse(MaxPooled(), data_for("gru_bidirectional", n=4)[0])
    assert not ok
    assert "nn.GRU" in reason


def test_fuse_picks_the_path_or_says_why_not(build_model, data_for):
    assert isinstance(
        fuse([build_model("cnn", seed=k) for k in range(2)], example_input=data_for("cnn")[0]), Population
    )
    assert isinstance(fuse([Residual(), Residual()], example_input=torch.randn(4, 6)), FunctionalPopulation)
    with pytest.raises(SpecError, match="Train them with K = 1"):
        fuse([DataDependent(), DataDependent()], example_input=torch.randn(4, 6))


def check_functional_population(device: str) -> None:
    """On ``device``, in float64: each member's forward is its module's, training matches each module trained
    alone, exported members stay on the device, and per-member dropout draws from the population's own
    generator there, leaving the global RNG of that device untouched."""
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1)).to(device)
    models = [_seeded(Residual, k).to(device, torch.float64) for k in range(3)]
    population = FunctionalPopulation(models)
    for k in range(3):
        torch.testing.assert_close(population(x)[k], models[k](x))
    lrs = [1e-2, 3e-3, 3e-2]
    PopulationTrainer(population, PopAdam(population.parameters(), n_members=3, lr=lrs)).fit(
        x, y, n_epochs=3, batch_size=8
    )
    for k in range(3):
        model = _train_alone(_seeded(Residual, k).to(device, torch.float64), x, y, lr=lrs[k])
        exported = population.member(k).state_dict()
        for name, value in model.state_dict().items():
            assert exported[name].device == value.device
            torch.testing.assert_close(exported[name], value, atol=1e-9, rtol=1e-7, msg=name)
    dropping = FunctionalPopulation([Residual(dropout=0.5).to(device) for _ in range(2)], seed=3)
    dropping.load_member(1, dropping.member(0))  # identical weights: only the dropout masks can differ
    rng_state = torch.cuda.get_rng_state if device == "cuda" else torch.get_rng_state
    before = rng_state()
    out = dropping(x.float())
    assert not torch.equal(out[0], out[1])
    assert torch.equal(rng_state(), before)


def test_functional_population_on_the_cpu_in_float64():
    check_functional_population("cpu")
