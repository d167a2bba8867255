"""``Population``: K models of a family tunelab owns (MLP, CNN, RNN, bag-of-embeddings text) stacked into
population layers."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

from tunelab.errors import SpecError
from tunelab.fused._base import BasePopulation, check_same_structure, meta_template
from tunelab.fused._layers import (
    ELEMENTWISE_MODULES,
    POOLING_MODULES,
    PopActivation,
    PopBatchNorm,
    PopConv2d,
    PopDropout,
    PopFlatten,
    PopLayer,
    PopLinear,
    PopPool2d,
)
from tunelab.fused._layout import Layout, RandomSource, convert_layout
from tunelab.fused._rnn import PopGRU, PopLSTM, PopRNN, PopSequencePooling
from tunelab.fused._text import PopTextBag, is_text_model, text_reason

__all__ = ["Population", "unsupported_reason"]

_RECURRENT = {nn.RNN: PopRNN, nn.LSTM: PopLSTM, nn.GRU: PopGRU}
_SUPPORTED_NAMES = (
    "nn.Sequential of Flatten, Linear, Conv2d, BatchNorm1d/2d, Dropout, pooling and activation layers; "
    "or a sequence model with attributes rnn (nn.RNN/LSTM/GRU, batch_first=True), pooling ('last' | 'mean') "
    "and head (nn.Linear); or a tunelab TextModel with encoder 'bag'"
)


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The layers of a (possibly nested) ``nn.Sequential`` in execution order, with their dotted paths."""
    found = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            found.extend(_leaves(child, prefix=f"{path}."))
        else:
            found.append((path, child))
    return found


def _is_sequence_model(module: nn.Module) -> bool:
    return isinstance(getattr(module, "rnn", None), nn.RNNBase) and isinstance(
        getattr(module, "head", None), nn.Linear
    )


def _layer_reason(path: str, layer: nn.Module) -> str | None:
    """Why ``layer`` has no population counterpart, or None when it has one."""
    if isinstance(layer, (nn.Linear, nn.Dropout, nn.Flatten, *ELEMENTWISE_MODULES, *POOLING_MODULES)):
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            dims = f"start_dim={layer.start_dim}, end_dim={layer.end_dim}"
            return f"layer '{path}' is nn.Flatten({dims}); only the default (1, -1) is supported"
        return None
    if isinstance(layer, nn.Conv2d):
        return (
            None
            if layer.padding_mode == "zeros"
            else f"layer '{path}' uses padding_mode={layer.padding_mode!r}"
        )
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        return None if layer.momentum is not None else f"layer '{path}' is a BatchNorm with momentum=None"
    return f"layer '{path}' is {type(layer).__name__}, which has no population layer"


def unsupported_reason(module: nn.Module) -> str | None:
    """Why population layers cannot represent ``module``, or None when they can."""
    if is_text_model(module):
        reason = text_reason(module)
        if reason is not None:
            return reason
        for path, layer in _leaves(module.get_submodule("head"), prefix="head."):
            reason = _layer_reason(path, layer)
            if reason is not None:
                return reason
        return None
    if type(module) is nn.Sequential:
        for path, layer in _leaves(module):
            reason = _layer_reason(path, layer)
            if reason is not None:
                return reason
        return None
    if _is_sequence_model(module):
        rnn = cast(nn.RNNBase, module.rnn)
        if not rnn.batch_first or bool(getattr(rnn, "proj_size", 0)):
            return "its rnn must be batch_first=True without proj_size"
        if getattr(module, "pooling", None) not in ("last", "mean"):
            return f"its pooling must be 'last' or 'mean', not {getattr(module, 'pooling', None)!r}"
        extra = sorted(name for name, _ in module.named_children() if name not in ("rnn", "head"))
        if extra:
            return f"its submodules {extra} are not part of the rnn -> pooling -> head structure"
        return None
    return f"{type(module).__name__} is not one of the supported structures ({_SUPPORTED_NAMES})"


class Population(BasePopulation):
    """K models of one tunelab family as a single module of population layers.

    Build it with :meth:`from_modules` from K independently built models of the same structure; their weights,
    BatchNorm buffers and dropout rates are copied in. ``forward(x)`` maps ``[N, ...]`` (shared by all
    members) to ``[K, N, out]``. :meth:`member` turns member k back into a standard module.

    Example::

        models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(5)]
        population = Population.from_modules(models, seed=0)
        population(torch.randn(32, 4)).shape  # torch.Size([5, 32, 3])
    """

    def __init__(
        self,
        layers: Sequence[PopLayer],
        paths: Sequence[str | None],
        template: nn.Module,
        *,
        n_members: int,
        random: RandomSource,
    ) -> None:
        super().__init__(n_members)
        self.layers = nn.ModuleList(layers)
        self.paths = list(paths)
        self.random = random
        # Kept in a list so that nn.Module does not register the (meta) template as a submodule.
        self._template = [template]
        plan: list[tuple[Layout, Layout]] = []
        layout: Layout = "shared"
        for layer in layers:
            plan.append((layout, layer.layout_in))
            layout = layer.layout_out
        self._plan = plan
        self._layout_out = layout

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module], *, seed: int = 0) -> Population:
        """Stack ``modules`` (K models of one structure) into a population; ``seed`` drives its dropout."""
        modules = list(modules)
        check_same_structure(modules)
        reason = unsupported_reason(modules[0])
        if reason is not None:
            raise SpecError(
                f"cannot build population layers for this model: {reason}. Supported: {_SUPPORTED_NAMES}. "
                "For any other module use FunctionalPopulation (torch.func), after can_fuse(model, example)."
            )
        random = RandomSource(seed)
        K = len(modules)
        layers: list[PopLayer] = []
        paths: list[str | None] = []
        layout: Layout = "shared"
        leaves: list[tuple[str, nn.Module]] | None = None
        if type(modules[0]) is nn.Sequential:
            leaves = _leaves(modules[0])
        elif is_text_model(modules[0]):
            # The bag encoder reads the whole TextModel (path ""): embeddings, pooling, table features.
            encoder = PopTextBag(K, modules[0])
            layers.append(encoder)
            paths.append("")
            layout = encoder.layout_out
            leaves = _leaves(modules[0].get_submodule("head"), prefix="head.")
        if leaves is not None:
            for path, template in leaves:
                layer = _make_layer(template, K, layout, random)
                layers.append(layer)
                paths.append(path)
                layout = layer.layout_out
        else:
            rnn = cast(nn.RNNBase, modules[0].rnn)
            layers.append(_RECURRENT[type(rnn)](K, rnn, layout_in="shared", random=random))
            layers.append(
                PopSequencePooling(
                    cast(Literal["last", "mean"], modules[0].pooling),
                    hidden_size=rnn.hidden_size,
                    bidirectional=rnn.bidirectional,
                )
            )
            head: nn.Linear = modules[0].head  # type: ignore[assignment]
            layers.append(_linear(head, K, "stacked"))
            paths = ["rnn", None, "head"]
        population = cls(layers, paths, meta_template(modules[0]), n_members=K, random=random)
        # Layers without a template tensor (dropout rates) are built on the CPU: follow the members' device.
        first = next(itertools.chain(modules[0].parameters(), modules[0].buffers()), None)
        if first is not None:
            population.to(first.device)
        for k, module in enumerate(modules):
            population.load_member(k, module)
        population.train(modules[0].training)
        return population

    def forward(self, x: Tensor) -> Tensor:
        """``[N, ...]`` -> ``[K, N, ...]``."""
        K = self.n_members
        for layer, (src, dst) in zip(self.layers, self._plan, strict=True):
            x = layer(convert_layout(x, src, dst, n_members=K))
        return convert_layout(x, self._layout_out, "stacked", n_members=K)

    def load_member(self, k: int, module: nn.Module) -> None:
        k = self.check_member_index(k)
        for layer, path in zip(self.layers, self.paths, strict=True):
            if path is not None:
                cast(PopLayer, layer).load_member(k, module.get_submodule(path))

    def graph_generators(self) -> list[torch.Generator]:
        return self.random.generators("cuda")

    def random_state(self) -> dict[str, Tensor]:
        """The dropout stream's state per device (the members share one stream: their masks are slices of one
        draw, so a member's masks depend on which members the population holds)."""
        return self.random.state()

    def load_random_state(self, state: Mapping[str, Tensor]) -> None:
        self.random.load_state(state)

    def member(self, k: int) -> nn.Module:
        k = self.check_member_index(k)
        device = next(iter(self.parameters()), torch.empty(0)).device
        module = meta_template(self._template[0]).to_empty(device=device)
        for layer, path in zip(self.layers, self.paths, strict=True):
            if path is not None:
                cast(PopLayer, layer).export_member(k, module.get_submodule(path))
        return module.train(self.training)

    def dropout_rates(self) -> Tensor:
        """Per-member dropout rate ``[K]`` of the first dropout in the model (zeros when there is none)."""
        for layer in self.layers:
            if isinstance(layer, PopDropout):
                return layer.rate.clone()
            if isinstance(layer, PopRNN | PopLSTM | PopGRU) and layer.num_layers > 1:
                return layer.dropout_rate.clone()
        return torch.zeros(self.n_members, dtype=torch.float64)

    def set_dropout_rate(
        self, rate: Tensor | float, *, members: Tensor | Sequence[int] | None = None
    ) -> None:
        """Set the dropout rate of every dropout in the model, for all members or for ``members``."""
        index = slice(None) if members is None else torch.as_tensor(members, dtype=torch.long)
        for layer in self.layers:
            if isinstance(layer, PopDropout):
                layer.rate[index] = torch.as_tensor(rate, dtype=torch.float64)
            if isinstance(layer, PopRNN | PopLSTM | PopGRU):
                layer.dropout_rate[index] = torch.as_tensor(rate, dtype=torch.float64)


def _linear(template: nn.Linear, n_members: int, layout: Layout) -> PopLinear:
    return PopLinear(
        n_members,
        template.in_features,
        template.out_features,
        bias=template.bias is not None,
        layout_in=layout,
        dtype=template.weight.dtype,
        device=template.weight.device,
    )


def _make_layer(template: nn.Module, n_members: int, layout: Layout, random: RandomSource) -> PopLayer:
    """The population layer for ``template``; it reads ``layout`` if it can, else the closest layout."""
    if isinstance(template, nn.Linear):
        return _linear(template, n_members, "stacked" if layout == "packed" else layout)
    if isinstance(template, nn.Conv2d):
        shared_ok = layout == "shared" and template.groups == 1
        return PopConv2d(n_members, template, layout_in="shared" if shared_ok else "packed")
    if isinstance(template, nn.BatchNorm2d):
        return PopBatchNorm(n_members, template, layout_in="packed")
    if isinstance(template, nn.BatchNorm1d):
        return PopBatchNorm(n_members, template, layout_in="stacked")
    if isinstance(template, nn.Dropout):
        return PopDropout(n_members, layout_in="packed" if layout == "packed" else "stacked", random=random)
    if isinstance(template, nn.Flatten):
        return PopFlatten(layout_in="shared" if layout == "shared" else "stacked")
    if isinstance(template, POOLING_MODULES):
        return PopPool2d(copy.deepcopy(template), layout_in="packed" if layout == "stacked" else layout)
    return PopActivation(copy.deepcopy(template), layout_in=layout)
