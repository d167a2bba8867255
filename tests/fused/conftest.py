"""Tiny models of the structures tunelab's model families build, and small data for them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn


class SequenceModel(nn.Module):
    """The structure of tunelab's sequence family: rnn (batch first) -> pooling over time -> linear head."""

    def __init__(
        self,
        cell: type[nn.RNNBase],
        *,
        hidden: int = 5,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "last",
        **rnn_kwargs: object,
    ) -> None:
        super().__init__()
        self.rnn = cell(
            3, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional, **rnn_kwargs
        )
        self.pooling = pooling
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), 3)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        if self.pooling == "mean":
            return self.head(out.mean(dim=1))
        if self.rnn.bidirectional:
            H = self.rnn.hidden_size
            return self.head(torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=-1))
        return self.head(out[:, -1])


def _mlp(dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 8, bias=False),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(8, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
    )


def _cnn(dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 3),
    )


FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "mlp_plain": lambda: nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ),
    "rnn_relu_2layer_mean": lambda: SequenceModel(nn.RNN, num_layers=2, pooling="mean", nonlinearity="relu"),
    "lstm_bidirectional_2layer": lambda: SequenceModel(nn.LSTM, num_layers=2, bidirectional=True),
    "gru_bidirectional": lambda: SequenceModel(nn.GRU, bidirectional=True),
    "gru_2layer_mean": lambda: SequenceModel(nn.GRU, num_layers=2, pooling="mean"),
}
INPUT_SHAPES = {"mlp": (6,), "mlp_plain": (6,), "cnn": (1, 8, 8)}


def build(kind: str, seed: int, **kwargs: float) -> nn.Module:
    """A fresh model of ``kind``, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FACTORIES[kind](**kwargs)


def make_data(kind: str, n: int = 40, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = INPUT_SHAPES.get(kind, (4, 3))  # sequences: 4 steps of 3 features
    x = torch.randn(n, *shape, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return x, y


@pytest.fixture
def build_model() -> Callable[..., nn.Module]:
    return build


@pytest.fixture
def data_for() -> Callable[..., tuple[Tensor, Tensor]]:
    return make_data


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest and steadiest on one thread (the shared hygiene fixture restores it)."""
    torch.set_num_threads(1)
