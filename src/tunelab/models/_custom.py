"""Users' model factories: import one from a string, call it with the arguments it accepts."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from tunelab.errors import SpecError

__all__ = ["call_factory", "import_factory"]

_DATA_ARGUMENTS = ("input_shape", "output_dim")


def import_factory(path: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:attribute"`` (the attribute may be dotted: ``m:Cls.make``)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(
            f"factory must be an import string 'package.module:function', e.g. 'mypkg.nets:make_net'; "
            f"got {path!r}."
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise SpecError(
                f"cannot import the model factory {path!r}: no module named {err.name!r}. Check the "
                "spelling, and that the module's folder is on the Python path (run from the project root, "
                "or add it to PYTHONPATH)."
            ) from err
        raise SpecError(
            f"cannot import the model factory {path!r}: module {module_name!r} was found but importing it "
            f"failed: {err}. Install the missing package."
        ) from err
    except Exception as err:
        raise SpecError(
            f"cannot import the model factory {path!r}: importing module {module_name!r} raised "
            f"{type(err).__name__}: {err}"
        ) from err
    owner = module_name
    for name in attribute.split("."):
        if not hasattr(target, name):
            public = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(name, public, n=3, cutoff=0.7)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(
                f"cannot import the model factory {path!r}: {owner!r} has no attribute {name!r}.{hint}"
            )
        target = getattr(target, name)
        owner = f"{owner}.{name}"
    if not callable(target):
        raise SpecError(
            f"the model factory {path!r} is a {type(target).__name__}, not a function or class; point "
            "factory at a callable that returns an nn.Module."
        )
    return target


def call_factory(
    factory: Callable[..., Any],
    *,
    kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    output_dim: int,
    name: str,
) -> nn.Module:
    """``factory(input_shape=, output_dim=, **kwargs)``, passing each data argument only if it is accepted.

    ``name`` names the factory in error messages.
    """
    data = {"input_shape": input_shape, "output_dim": output_dim}
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C extensions have no introspectable signature
        signature = None
    if signature is not None:
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        arguments = {k: v for k, v in data.items() if accepts_any or k in signature.parameters} | kwargs
        try:
            signature.bind(**arguments)
        except TypeError as err:
            raise SpecError(
                f"cannot call the model factory {name} with keyword arguments {sorted(arguments)}: {err}. "
                f"Its signature is {name}{signature}; make kwargs match it (tunelab passes "
                f"{' and '.join(_DATA_ARGUMENTS)} itself when the factory accepts them)."
            ) from err
    else:
        arguments = dict(kwargs)
    try:
        model = factory(**arguments)
    except Exception as err:
        raise SpecError(
            f"the model factory {name} raised {type(err).__name__}: {err} "
            f"(called with input_shape={input_shape}, output_dim={output_dim}, kwargs={kwargs})."
        ) from err
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise SpecError(
            f"the model factory {name} returned the class {model.__name__}, not an instance; "
            f"return {model.__name__}(...)."
        )
    if not isinstance(model, nn.Module):
        raise SpecError(
            f"the model factory {name} returned a {type(model).__name__}; expected a torch.nn.Module. "
            "Return the model instance."
        )
    return model
