"""The RNN family: ``SequenceModel``, a recurrent layer pooled over time and a linear head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.models._specs import RNNSpec

__all__ = ["SequenceModel", "build_rnn"]

_CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceModel(nn.Module):
    """``[N, L, F]`` -> ``rnn`` (batch first) -> pool over time -> ``head`` -> ``[N, output_dim]``.

    ``pooling="last"`` takes each direction's final step: the output at step L-1 for the forward direction
    and, when bidirectional, the output at step 0 for the backward direction (it reads the sequence from the
    end), concatenated ``[forward, backward]``; this equals the top layer's final hidden state ``h_n``.
    ``pooling="mean"`` averages the outputs of all L steps.
    """

    def __init__(self, rnn: nn.RNNBase, head: nn.Linear, *, pooling: str) -> None:
        super().__init__()
        if not rnn.batch_first:
            raise SpecError("SequenceModel needs a batch-first recurrent layer: pass batch_first=True.")
        if pooling not in ("last", "mean"):
            raise SpecError(f"pooling must be 'last' or 'mean'; got {pooling!r}.")
        self.rnn = rnn
        self.pooling = pooling
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(x)  # [N, L, D * H]
        if self.pooling == "mean":
            pooled = outputs.mean(dim=1)
        elif self.rnn.bidirectional:
            size = self.rnn.hidden_size
            pooled = torch.cat([outputs[:, -1, :size], outputs[:, 0, size:]], dim=1)
        else:
            pooled = outputs[:, -1]
        return self.head(pooled)


def build_rnn(spec: RNNSpec, *, input_shape: tuple[int, ...], output_dim: int) -> SequenceModel:
    """A ``SequenceModel`` for (L, F) samples; its head reads hidden_size x (2 if bidirectional) features."""
    if len(input_shape) != 2:
        raise SpecError(
            f"an RNN needs sequence samples of shape (length, features); the data's samples have shape "
            f"{input_shape}. Use type 'mlp' for tables or 'cnn' for images, or load the data as sequences."
        )
    rnn = _CELLS[spec.cell](
        input_size=input_shape[1],
        hidden_size=spec.hidden_size,
        num_layers=spec.n_layers,
        dropout=spec.dropout,
        bidirectional=spec.bidirectional,
        batch_first=True,
    )
    n_directions = 2 if spec.bidirectional else 1
    return SequenceModel(rnn, nn.Linear(n_directions * spec.hidden_size, output_dim), pooling=spec.pooling)
