"""The generic path: any user ``nn.Module`` fused with ``torch.func`` (stacked state + ``vmap``).

``can_fuse`` decides up front, with a probe, whether a module can be fused at all and says why not; the caller
then trains with K = 1 and reports that reason.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from tunelab.errors import SpecError
from tunelab.fused._base import BasePopulation, check_same_structure, meta_template
from tunelab.fused._population import Population, unsupported_reason

__all__ = ["FunctionalPopulation", "can_fuse", "fuse"]


def _safe(name: str) -> str:
    return name.replace(".", "__")


class FunctionalPopulation(BasePopulation):
    """K copies of an arbitrary module (same structure), run as one with ``torch.func.vmap``.

    Parameters and buffers are stacked ``[K, ...]`` and registered on this module, so the population
    optimizers and member management work as for :class:`Population`. The forward pass calls the module
    functionally on a ``meta`` copy (no memory) under ``vmap(randomness="different")``: each member draws its
    own dropout masks, from a stream seeded by ``seed`` (the global RNG is left as it was). Python-float
    settings (a dropout rate) cannot differ between members here; BatchNorm running statistics are per member.
    """

    # Each forward pass draws a seed on the host and reseeds the device's stream from it: a recorded CUDA
    # graph would replay the first seed forever.
    graph_safe = False

    def __init__(self, modules: Sequence[nn.Module], *, seed: int = 0) -> None:
        modules = list(modules)
        check_same_structure(modules)
        super().__init__(len(modules))
        params, buffers = stack_module_state(modules)
        self._names = {"param": list(params), "buffer": list(buffers)}
        for name, value in params.items():
            self.register_parameter(_safe(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(_safe(name), value.clone())
        self._base = [meta_template(modules[0])]
        self._seeds = torch.Generator().manual_seed(seed)
        self.train(modules[0].training)

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = {name: getattr(self, _safe(name)) for name in self._names["param"]}
        buffers = {name: getattr(self, _safe(name)) for name in self._names["buffer"]}
        return params, buffers

    def forward(self, x: Tensor) -> Tensor:
        """``[N, ...]`` -> ``[K, N, ...]``."""
        base = self._base[0].train(self.training)

        def call(params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return functional_call(base, (params, buffers), (inputs,))

        params, buffers = self._state()
        batched = vmap(call, in_dims=(0, 0, None), randomness="different")
        if not self.training:
            return batched(params, buffers, x)
        seed = int(torch.randint(0, 2**62, (), generator=self._seeds))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return batched(params, buffers, x)

    def random_state(self) -> dict[str, Tensor]:
        """The stream that seeds each training forward pass."""
        return {"seeds": self._seeds.get_state()}

    def load_random_state(self, state: Mapping[str, Tensor]) -> None:
        self._seeds.set_state(state["seeds"].to("cpu", torch.uint8))

    def member(self, k: int) -> nn.Module:
        k = self.check_member_index(k)
        params, buffers = self._state()
        device = next(iter(params.values()), torch.empty(0)).device
        module = meta_template(self._base[0]).to_empty(device=device)
        with torch.no_grad():
            for name, value in params.items():
                module.get_parameter(name).copy_(value[k])
            for name, value in buffers.items():
                module.get_buffer(name).copy_(value[k])
        return module.train(self.training)

    @torch.no_grad()
    def load_member(self, k: int, module: nn.Module) -> None:
        k = self.check_member_index(k)
        params, buffers = self._state()
        for name, value in {**params, **buffers}.items():
            value[k].copy_(module.get_parameter(name) if name in params else module.get_buffer(name))


def _probe_functional(module: nn.Module, example_input: Tensor) -> str | None:
    """Run a 2-member functional population forward and backward in training mode; the failure, if any."""
    copies = [copy.deepcopy(module).train() for _ in range(2)]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            population = FunctionalPopulation(copies, seed=0)
            out = population(example_input)
            if not isinstance(out, Tensor):
                return f"its forward returns {type(out).__name__}; a population needs a single tensor output"
            if out.requires_grad:
                out.float().square().mean().backward()
    except Exception as error:  # the probe exists to turn any failure into a reason
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"its forward under torch.func.vmap failed with {type(error).__name__}: {first_line}"
    for warning in caught:
        if "batching rule" in str(warning.message):
            return (
                f"an operation has no vmap batching rule and would run member by member ({warning.message})"
            )
    return None


@torch.no_grad()
def _probe_layers(module: nn.Module, example_input: Tensor) -> str | None:
    """Check that population layers reproduce ``module``'s own forward (eval mode) on ``example_input``."""
    reference = copy.deepcopy(module).eval()
    population = Population.from_modules([reference]).eval()
    try:
        expected = reference(example_input)
        got = population(example_input)[0]
    except Exception as error:  # a shape mismatch means the structure was misread
        return f"population layers could not run it ({type(error).__name__}: {error})"
    if (
        not isinstance(expected, Tensor)
        or expected.shape != got.shape
        or not torch.allclose(expected, got, atol=1e-4, rtol=1e-4)
    ):
        return "its forward does something other than its layers in sequence (population layers would differ)"
    return None


def can_fuse(module: nn.Module, example_input: Tensor) -> tuple[bool, str]:
    """Whether K copies of ``module`` can train as one fused population, and why (or why not).

    Population layers are tried first (tunelab's MLP / CNN / RNN families), then the ``torch.func`` path,
    which is probed with a forward and backward pass on ``example_input`` (a small batch, ``[N, ...]``). When
    the answer is no, train the configs with K = 1 and report the reason.
    """
    layer_reason = unsupported_reason(module)
    if layer_reason is None:
        layer_reason = _probe_layers(module, example_input)
    if layer_reason is None:
        return True, "fusible with population layers (batched GEMMs, grouped convolutions)"
    for path, sub in module.named_modules():
        if isinstance(sub, nn.RNNBase):
            return False, (
                f"submodule '{path}' is an nn.{type(sub).__name__}, whose library kernel has no "
                f"torch.func.vmap "
                "batching rule, and the model is not a tunelab sequence model (rnn -> pooling -> head) that "
                "population layers could rebuild"
            )
    functional_reason = _probe_functional(module, example_input)
    if functional_reason is None:
        return True, f"fusible with torch.func.vmap (population layers do not apply: {layer_reason})"
    return False, functional_reason


def fuse(modules: Sequence[nn.Module], *, example_input: Tensor, seed: int = 0) -> BasePopulation:
    """Fuse ``modules`` into the fastest population that represents them.

    Population layers when the models are a tunelab family, else a :class:`FunctionalPopulation`. Raises
    :class:`SpecError` with the reason when neither applies (then train the configs one by one, K = 1).
    """
    modules = list(modules)
    check_same_structure(modules)
    ok, reason = can_fuse(modules[0], example_input)
    if not ok:
        raise SpecError(f"these models cannot be fused into one population: {reason}. Train them with K = 1.")
    if unsupported_reason(modules[0]) is None:
        return Population.from_modules(modules, seed=seed)
    return FunctionalPopulation(modules, seed=seed)
