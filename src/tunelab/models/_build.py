"""``build_model``: a spec (or a user's callable) in, a seeded, shape-checked ``nn.Module`` out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.inputs import TextInput
from tunelab.models._cnn import build_cnn
from tunelab.models._custom import call_factory, import_factory
from tunelab.models._ensemble import Ensemble, combine_rule
from tunelab.models._mlp import build_mlp
from tunelab.models._rnn import build_rnn
from tunelab.models._specs import (
    AnyModelSpec,
    CNNSpec,
    CustomSpec,
    EnsembleSpec,
    MLPSpec,
    RNNSpec,
    parse_model_spec,
)
from tunelab.models._text import TextSpec, build_text
from tunelab.models._window import WindowedModel, window_input_shape
from tunelab.models.init import init_weights

__all__ = ["build_model"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": build_mlp, "cnn": build_cnn, "rnn": build_rnn}


def build_model(
    spec: AnyModelSpec | Mapping[str, Any] | Callable[..., nn.Module],
    *,
    input_shape: tuple[int, ...],
    output_dim: int,
    seed: int,
    text: TextInput | None = None,
) -> nn.Module:
    """Build the model for samples of ``input_shape``: table (F,), image (C, H, W), sequence (L, F) or text
    (L + F,), whose layout ``text`` gives (``DataBundle.text``, ``Preprocessor.text_input``); a text model
    needs it, the other families ignore it.

    ``spec`` is a ``ModelSpec``, a mapping that validates as one, or a callable factory (called like a custom
    spec's factory, without kwargs; bind them with ``functools.partial``). An ``EnsembleSpec`` builds an
    :class:`Ensemble` of its members, member ``i`` with seed ``seed + i``. The model maps
    ``[N, *input_shape]`` to ``[N, output_dim]``, which a dry forward pass on two zero samples checks.
    The same ``seed`` gives the same weights; the global RNG state after the call is the one before it.
    Built-in families come back in train mode; a factory's module in the modes it was returned in.
    """
    shape = _checked_input_shape(input_shape)
    if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
        raise SpecError(
            f"output_dim must be an int >= 1 (classes or regression targets); got {output_dim!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed must be an int; got {seed!r}.")
    if isinstance(spec, Mapping):
        spec = parse_model_spec(spec)
    # Construction draws PyTorch's default init (and a user's factory its own) from the global CPU generator:
    # seed it here and restore it afterwards, so the caller's random stream is left exactly as it was.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model, source = _construct(spec, input_shape=shape, output_dim=output_dim, seed=seed, text=text)
        if isinstance(spec, (MLPSpec, CNNSpec, RNNSpec, TextSpec)) and (
            spec.init != "default" or spec.init_gain != 1.0
        ):
            init_weights(model, spec.init, gain=spec.init_gain, generator=torch.Generator().manual_seed(seed))
        _check_output(model, input_shape=shape, output_dim=output_dim, source=source)
    return model


def _construct(
    spec: Any, *, input_shape: tuple[int, ...], output_dim: int, seed: int, text: TextInput | None
) -> tuple[nn.Module, str]:
    if isinstance(spec, EnsembleSpec):
        members = [
            build_model(member, input_shape=input_shape, output_dim=output_dim, seed=seed + i, text=text)
            for i, member in enumerate(spec.members)
        ]
        ensemble = Ensemble(members, spec.weights, combine=combine_rule(spec.combine, output_dim))
        return ensemble, f"the ensemble of {len(members)} models"
    if isinstance(spec, (MLPSpec, RNNSpec)) and spec.windowed:
        inner_shape = window_input_shape(input_shape, spec.lags, spec.type)
        inner = _BUILDERS[spec.type](spec, input_shape=inner_shape, output_dim=output_dim)
        windowed = WindowedModel(inner, lags=inner_shape[0], shift=spec.normalize == "last")
        return windowed, f"the {spec.type} model"
    if isinstance(spec, TextSpec):
        return build_text(spec, input_shape=input_shape, output_dim=output_dim, text=text), "the text model"
    if text is not None and isinstance(spec, (MLPSpec, CNNSpec, RNNSpec)):
        raise SpecError(
            f"model type '{spec.type}' cannot read text: the data's samples are token ids of its text "
            "column(s). Use model type 'text' (encoder bag, cnn, lstm or gru)."
        )
    if isinstance(spec, (MLPSpec, CNNSpec, RNNSpec)):
        model = _BUILDERS[spec.type](spec, input_shape=input_shape, output_dim=output_dim)
        return model, f"the {spec.type} model"
    if isinstance(spec, CustomSpec):
        factory, name, kwargs = import_factory(spec.factory), repr(spec.factory), spec.kwargs
    elif callable(spec):
        factory, name, kwargs = spec, repr(getattr(spec, "__qualname__", type(spec).__name__)), {}
    else:
        raise SpecError(
            "build_model needs a ModelSpec (MLPSpec, CNNSpec, RNNSpec, TextSpec, CustomSpec), an "
            "EnsembleSpec, a mapping with a 'type' key, or a callable that returns an nn.Module; "
            f"got a {type(spec).__name__}."
        )
    model = call_factory(factory, kwargs=kwargs, input_shape=input_shape, output_dim=output_dim, name=name)
    return model, f"the model from factory {name}"


def _checked_input_shape(input_shape: Any) -> tuple[int, ...]:
    dims = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise SpecError(
            f"input_shape must be a non-empty tuple of positive ints, one sample's shape without the batch "
            f"dimension (table (F,), image (C, H, W), sequence (L, F)); got {input_shape!r}."
        )
    return dims


def _check_output(model: nn.Module, *, input_shape: tuple[int, ...], output_dim: int, source: str) -> None:
    """Two zero samples through ``model`` in eval mode; ``SpecError`` unless out comes ``[2, output_dim]``."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    batch = torch.zeros((2, *input_shape), device=device, dtype=dtype)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()  # BatchNorm must not update its running statistics, Dropout must not draw
    try:
        with torch.no_grad():
            output = model(batch)
    except Exception as err:
        raise SpecError(
            f"{source} fails on a batch of 2 samples of shape {input_shape} "
            f"({type(err).__name__}: {err}). The model must accept inputs of shape "
            f"[N, {_dims(input_shape)}], the data's sample shape with a leading batch dimension."
        ) from err
    finally:
        for module, training in modes:
            module.training = training
    expected = (2, output_dim)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = (
            f"shape {list(output.shape)}"
            if isinstance(output, torch.Tensor)
            else f"a {type(output).__name__}"
        )
        raise SpecError(
            f"{source} returns {got} for a batch of 2 samples of shape {input_shape}; expected a tensor of "
            f"shape {list(expected)} (output_dim={output_dim}: one output per class or regression target). "
            "Make the model's last layer produce output_dim features and return that tensor alone (a factory "
            "receives output_dim as an argument)."
        )


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)
