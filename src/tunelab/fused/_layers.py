"""Population layers: K same-shaped layers as one layer whose parameters carry a leading member dimension.

Every parameter and buffer of a population layer is ``[K, ...]``, so selecting, copying or resetting members
is one ``index_select`` / slice per tensor, whatever the layer. Each layer reads one of the layouts of
:mod:`tunelab.fused._layout` (``layout_in``, fixed when the population is built) and writes ``layout_out``.
``load_member(k, module)`` copies a standard ``torch.nn`` layer into slot k; ``export_member(k, module)``
writes slot k back into one, so a member can leave the population as an ordinary module.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.fused._layout import Layout, RandomSource, member_dropout

__all__ = [
    "ELEMENTWISE_MODULES",
    "POOLING_MODULES",
    "PopActivation",
    "PopBatchNorm",
    "PopConv2d",
    "PopDropout",
    "PopFlatten",
    "PopLayer",
    "PopLinear",
    "PopPool2d",
]

# Parameter-free modules that act element by element: they work on every layout unchanged.
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
)
# Parameter-free modules that act channel by channel on [N, C, H, W]: they work on the packed layout
# unchanged.
POOLING_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


_M = TypeVar("_M", bound=nn.Module)


def _expect(module: nn.Module, cls: type[_M]) -> _M:
    if not isinstance(module, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(module).__name__}")
    return module


class PopLayer(nn.Module):
    """Base of the population layers.

    Subclasses set ``accepts`` (the input layouts they can read) and compute ``layout_out`` from
    ``layout_in``. ``load_member`` / ``export_member`` are no-ops for layers without state.
    """

    accepts: ClassVar[tuple[Layout, ...]] = ("shared", "stacked", "packed")

    def __init__(self, *, layout_in: Layout) -> None:
        super().__init__()
        if layout_in not in self.accepts:
            raise ValueError(f"{type(self).__name__} reads layouts {self.accepts}, not {layout_in!r}")
        self.layout_in: Layout = layout_in
        self.layout_out: Layout = layout_in

    def load_member(self, k: int, module: nn.Module) -> None:
        """Copy the state of ``module`` (a standard torch layer) into member slot ``k``."""

    def export_member(self, k: int, module: nn.Module) -> None:
        """Write member ``k``'s state into ``module`` (a standard torch layer of the same structure)."""


class PopLinear(PopLayer):
    """K linear layers: weight ``[K, in, out]``, bias ``[K, out]``; ``[N, in]`` or ``[K, N, in]`` -> ``[K, N,
    out]``.

    On the shared input (the first layer) every member reads the same minibatch, so the product is one batched
    GEMM over a broadcast (stride-0) input instead of K copies.
    """

    accepts = ("shared", "stacked")

    def __init__(
        self,
        n_members: int,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        layout_in: Layout,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(layout_in=layout_in)
        self.layout_out = "stacked"
        self.weight = nn.Parameter(
            torch.zeros(n_members, in_features, out_features, dtype=dtype, device=device)
        )
        self.bias = (
            nn.Parameter(torch.zeros(n_members, out_features, dtype=dtype, device=device)) if bias else None
        )

    def forward(self, x: Tensor) -> Tensor:
        K, n_in, n_out = self.weight.shape
        if self.layout_in == "shared":
            lead = x.shape[:-1]
            x3 = x.reshape(1, -1, n_in).expand(K, -1, n_in)
        else:
            lead = x.shape[1:-1]
            x3 = x.reshape(K, -1, n_in)
        if self.bias is None:
            out = torch.bmm(x3, self.weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), x3, self.weight)
        return out.view(K, *lead, n_out)

    def load_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Linear)
        with torch.no_grad():
            self.weight[k].copy_(module.weight.t())
            if self.bias is not None and module.bias is not None:
                self.bias[k].copy_(module.bias)

    def export_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Linear)
        with torch.no_grad():
            module.weight.copy_(self.weight[k].t())
            if self.bias is not None and module.bias is not None:
                module.bias.copy_(self.bias[k])


class PopConv2d(PopLayer):
    """K 2-D convolutions as one: weight ``[K, C_out, C_in/groups, kh, kw]``, bias ``[K, C_out]``.

    Shared input ``[N, C_in, H, W]``: one ordinary convolution with ``K*C_out`` filters. Packed input ``[N,
    K*C_in, H, W]``: one grouped convolution with ``groups=K*groups``. Output is packed ``[N, K*C_out, H',
    W']``.
    """

    accepts = ("shared", "packed")

    def __init__(self, n_members: int, template: nn.Conv2d, *, layout_in: Layout) -> None:
        if template.padding_mode != "zeros":
            raise ValueError(f"PopConv2d supports padding_mode='zeros', not {template.padding_mode!r}")
        if layout_in == "shared" and template.groups != 1:
            raise ValueError("a grouped convolution cannot read the shared layout; convert to packed first")
        super().__init__(layout_in=layout_in)
        self.layout_out = "packed"
        self.stride = template.stride
        self.padding = template.padding
        self.dilation = template.dilation
        self.groups = template.groups
        dtype, device = template.weight.dtype, template.weight.device
        self.weight = nn.Parameter(torch.zeros(n_members, *template.weight.shape, dtype=dtype, device=device))
        has_bias = template.bias is not None
        self.bias = (
            nn.Parameter(torch.zeros(n_members, template.out_channels, dtype=dtype, device=device))
            if has_bias
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        K = self.weight.shape[0]
        weight = self.weight.reshape(-1, *self.weight.shape[2:])
        bias = None if self.bias is None else self.bias.reshape(-1)
        groups = self.groups if self.layout_in == "shared" else K * self.groups
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def load_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Conv2d)
        with torch.no_grad():
            self.weight[k].copy_(module.weight)
            if self.bias is not None and module.bias is not None:
                self.bias[k].copy_(module.bias)

    def export_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Conv2d)
        with torch.no_grad():
            module.weight.copy_(self.weight[k])
            if self.bias is not None and module.bias is not None:
                module.bias.copy_(self.bias[k])


class PopBatchNorm(PopLayer):
    """K batch norms as one over ``K*C`` channels, with real per-member running statistics.

    Parameters and buffers are ``[K, C]``; the functional call sees ``[K*C]`` views of them, so the running
    statistics it updates in place are the members' own. Reads stacked ``[K, N, C]`` (``BatchNorm1d``) or
    packed ``[N, K*C, H, W]`` (``BatchNorm2d``).
    """

    accepts = ("stacked", "packed")

    def __init__(
        self, n_members: int, template: nn.modules.batchnorm._BatchNorm, *, layout_in: Layout
    ) -> None:
        if template.momentum is None:
            raise ValueError(
                "PopBatchNorm needs a numeric momentum (momentum=None, a cumulative average, is unsupported)"
            )
        super().__init__(layout_in=layout_in)
        self.eps = template.eps
        self.momentum = template.momentum
        C = template.num_features
        dtype = template.running_mean.dtype if template.running_mean is not None else torch.float32
        device = template.running_mean.device if template.running_mean is not None else None
        if template.affine:
            self.weight: nn.Parameter | None = nn.Parameter(
                torch.ones(n_members, C, dtype=dtype, device=device)
            )
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.zeros(n_members, C, dtype=dtype, device=device)
            )
        else:
            self.weight = self.bias = None
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if template.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(n_members, C, dtype=dtype, device=device))
            self.register_buffer("running_var", torch.ones(n_members, C, dtype=dtype, device=device))
            self.register_buffer(
                "num_batches_tracked", torch.zeros(n_members, dtype=torch.long, device=device)
            )
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: Tensor) -> Tensor:
        stacked = self.layout_in == "stacked"
        if stacked:
            K, N, C = x.shape
            x = x.transpose(0, 1).reshape(N, K * C)
        use_batch_stats = self.training or self.running_mean is None
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        out = F.batch_norm(
            x,
            None if self.running_mean is None else self.running_mean.view(-1),
            None if self.running_var is None else self.running_var.view(-1),
            None if self.weight is None else self.weight.view(-1),
            None if self.bias is None else self.bias.view(-1),
            use_batch_stats,
            self.momentum,
            self.eps,
        )
        if stacked:
            return out.view(N, K, C).transpose(0, 1)
        return out

    def load_member(self, k: int, module: nn.Module) -> None:
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                mine = getattr(self, name)
                if mine is not None:
                    mine[k].copy_(getattr(module, name))

    def export_member(self, k: int, module: nn.Module) -> None:
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                mine = getattr(self, name)
                if mine is not None:
                    getattr(module, name).copy_(mine[k])


class PopDropout(PopLayer):
    """Dropout with a per-member rate: buffer ``rate`` ``[K]``; shared input is broadcast to stacked first."""

    accepts = ("stacked", "packed")

    def __init__(self, n_members: int, *, layout_in: Layout, random: RandomSource) -> None:
        super().__init__(layout_in=layout_in)
        self.random = random
        self.rate: Tensor
        self.register_buffer("rate", torch.zeros(n_members, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        generator = self.random.generator(x.device)
        return member_dropout(x, 1.0 - self.rate, layout=self.layout_in, generator=generator)

    def load_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Dropout)
        self.rate[k] = module.p

    def export_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Dropout)
        module.p = float(self.rate[k])


class PopActivation(PopLayer):
    """An element-wise, parameter-free module (``nn.ReLU``...) applied to any layout as it is."""

    def __init__(self, module: nn.Module, *, layout_in: Layout) -> None:
        super().__init__(layout_in=layout_in)
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


class PopPool2d(PopLayer):
    """A channel-wise, parameter-free 2-D pooling module applied to the shared or packed layout as it is."""

    accepts = ("shared", "packed")

    def __init__(self, module: nn.Module, *, layout_in: Layout) -> None:
        super().__init__(layout_in=layout_in)
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


class PopFlatten(PopLayer):
    """``nn.Flatten()`` (``start_dim=1``): shared ``[N, ...]`` -> ``[N, F]``; stacked ``[K, N, ...]`` -> ``[K,
    N, F]``.

    A packed input is first viewed as stacked (no copy), so the next batched GEMM reads each member's features
    in place.
    """

    accepts = ("shared", "stacked")

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) if self.layout_in == "shared" else x.flatten(2)
