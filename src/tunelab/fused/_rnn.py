"""Recurrent population layers: RNN / LSTM / GRU cells written with batched GEMMs.

The library's fused RNN kernels cannot batch over members, so the recurrence is written out: per layer and
direction, one batched GEMM projects the inputs of all time steps, then one ``baddbmm`` per time step applies
the recurrent weights of all K members. Gate order and gate math follow torch's (LSTM: i, f, g, o; GRU: r, z,
n with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``), so stacked torch weights reproduce torch's outputs.

Parameters keep torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``...), transposed to ``[K, in,
gates*H]``.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from tunelab.fused._layers import PopLayer, _expect
from tunelab.fused._layout import Layout, RandomSource, member_dropout

__all__ = ["PopGRU", "PopLSTM", "PopRNN", "PopSequencePooling"]


class _PopRecurrent(PopLayer):
    """Base of the recurrent population layers; input ``[N, L, F]`` (shared) or ``[K, N, L, F]``, batch first.

    Output: stacked ``[K, N, L, D*H]`` (D = 2 when bidirectional), the top layer's hidden state at every step,
    as ``nn.RNN/LSTM/GRU`` return it. Initial states are zeros. ``dropout_rate`` (``[K]``) is the per-member
    dropout between layers, applied in training mode as torch's ``dropout`` argument is.
    """

    accepts = ("shared", "stacked")
    n_gates: ClassVar[int]
    torch_type: ClassVar[type[nn.RNNBase]]

    def __init__(
        self, n_members: int, template: nn.RNNBase, *, layout_in: Layout, random: RandomSource
    ) -> None:
        if not template.batch_first:
            raise ValueError("population recurrent layers expect batch_first=True modules")
        if getattr(template, "proj_size", 0):
            raise ValueError("LSTM projections (proj_size > 0) are not supported in a population")
        super().__init__(layout_in=layout_in)
        self.layout_out = "stacked"
        self.random = random
        self.hidden_size = template.hidden_size
        self.num_layers = template.num_layers
        self.bidirectional = template.bidirectional
        self.has_bias = template.bias
        self.nonlinearity: str = getattr(template, "nonlinearity", "tanh")
        reference = template.get_parameter("weight_ih_l0")
        dtype, device = reference.dtype, reference.device
        H, G, D = self.hidden_size, self.n_gates, 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            n_in = template.input_size if layer == 0 else D * H
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                self.register_parameter(
                    f"weight_ih_{name}",
                    nn.Parameter(torch.zeros(n_members, n_in, G * H, dtype=dtype, device=device)),
                )
                self.register_parameter(
                    f"weight_hh_{name}",
                    nn.Parameter(torch.zeros(n_members, H, G * H, dtype=dtype, device=device)),
                )
                if self.has_bias:
                    self.register_parameter(
                        f"bias_ih_{name}",
                        nn.Parameter(torch.zeros(n_members, G * H, dtype=dtype, device=device)),
                    )
                    self.register_parameter(
                        f"bias_hh_{name}",
                        nn.Parameter(torch.zeros(n_members, G * H, dtype=dtype, device=device)),
                    )
        self.dropout_rate: Tensor
        self.register_buffer("dropout_rate", torch.zeros(n_members, dtype=torch.float64))

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _cell(
        self, x_gates: Tensor, h_gates: Tensor, h: Tensor, c: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        K = int(self.get_parameter("weight_ih_l0").shape[0])
        H = self.hidden_size
        shared = self.layout_in == "shared"
        N, L = (x.shape[0], x.shape[1]) if shared else (x.shape[1], x.shape[2])
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes()):
                name = f"l{layer}{suffix}"
                w_ih: Tensor = getattr(self, f"weight_ih_{name}")
                w_hh: Tensor = getattr(self, f"weight_hh_{name}")
                b_ih: Tensor | None = getattr(self, f"bias_ih_{name}", None)
                b_hh: Tensor | None = getattr(self, f"bias_hh_{name}", None)
                if layer == 0 and shared:
                    inputs = x.reshape(1, N * L, -1).expand(K, -1, -1)
                else:
                    inputs = x.reshape(K, N * L, -1)
                # Input projections of every time step in one GEMM, laid out [L, K, N, G*H] so that each
                # step's slice is contiguous.
                x_all = (
                    torch.bmm(inputs, w_ih)
                    if b_ih is None
                    else torch.baddbmm(b_ih.unsqueeze(1), inputs, w_ih)
                )
                # unbind, not indexing: the backward of L selects would build L full-size zero gradients.
                x_steps = x_all.view(K, N, L, -1).permute(2, 0, 1, 3).contiguous().unbind(0)
                h = x_all.new_zeros(K, N, H)
                c = x_all.new_zeros(K, N, H) if self.n_gates == 4 else None
                steps = range(L - 1, -1, -1) if direction == 1 else range(L)
                hs: list[Tensor] = [h] * L
                for t in steps:
                    h_gates = (
                        torch.bmm(h, w_hh) if b_hh is None else torch.baddbmm(b_hh.unsqueeze(1), h, w_hh)
                    )
                    h, c = self._cell(x_steps[t], h_gates, h, c)
                    hs[t] = h
                outputs.append(torch.stack(hs, dim=2))
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.training and layer < self.num_layers - 1:
                x = member_dropout(
                    x, 1.0 - self.dropout_rate, layout="stacked", generator=self.random.generator(x.device)
                )
        return x

    def load_member(self, k: int, module: nn.Module) -> None:
        with torch.no_grad():
            for name, param in self.named_parameters():
                source: Tensor = getattr(module, name)
                param[k].copy_(source.t() if source.dim() == 2 else source)
        self.dropout_rate[k] = float(getattr(module, "dropout", 0.0))

    def export_member(self, k: int, module: nn.Module) -> None:
        with torch.no_grad():
            for name, param in self.named_parameters():
                target: Tensor = getattr(module, name)
                target.copy_(param[k].t() if target.dim() == 2 else param[k])
        # torch warns when dropout > 0 with a single layer; it has no effect there, so keep the module's own.
        if self.num_layers > 1:
            _expect(module, nn.RNNBase).dropout = float(self.dropout_rate[k])


class PopRNN(_PopRecurrent):
    """K ``nn.RNN`` (tanh or relu) as one population layer."""

    n_gates = 1
    torch_type = nn.RNN

    def _cell(
        self, x_gates: Tensor, h_gates: Tensor, h: Tensor, c: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        pre = x_gates + h_gates
        return (torch.relu(pre) if self.nonlinearity == "relu" else torch.tanh(pre)), None


class PopLSTM(_PopRecurrent):
    """K ``nn.LSTM`` as one population layer (gates i, f, g, o as torch orders them)."""

    n_gates = 4
    torch_type = nn.LSTM

    def _cell(
        self, x_gates: Tensor, h_gates: Tensor, h: Tensor, c: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        i, f, g, o = (x_gates + h_gates).chunk(4, dim=-1)
        c = torch.sigmoid(f) * cast(Tensor, c) + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class PopGRU(_PopRecurrent):
    """K ``nn.GRU`` as one population layer (gates r, z, n as torch orders them)."""

    n_gates = 3
    torch_type = nn.GRU

    def _cell(
        self, x_gates: Tensor, h_gates: Tensor, h: Tensor, c: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        x_r, x_z, x_n = x_gates.chunk(3, dim=-1)
        h_r, h_z, h_n = h_gates.chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h, None


class PopSequencePooling(PopLayer):
    """Reduce ``[K, N, L, D*H]`` recurrent outputs over time to ``[K, N, D*H]``.

    ``"last"``: the last step; when bidirectional, the forward direction's last step and the backward
    direction's first step (each direction's final state), concatenated. ``"mean"``: the mean over time.
    """

    accepts = ("stacked",)

    def __init__(self, mode: Literal["last", "mean"], *, hidden_size: int, bidirectional: bool) -> None:
        super().__init__(layout_in="stacked")
        self.mode = mode
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "mean":
            return x.mean(dim=2)
        if not self.bidirectional:
            return x[:, :, -1]
        H = self.hidden_size
        return torch.cat([x[:, :, -1, :H], x[:, :, 0, H:]], dim=-1)
