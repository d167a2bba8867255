"""TorchScript: compile a module by tracing (or scripting), check it computes what the module computes.

TorchScript is deprecated in recent PyTorch in favour of ``torch.export``, which warns on every call;
tunelab still writes it because deployment tools (libtorch, Triton, TorchServe) load it, and because
``torch.jit.load`` runs a user's own module in a process that does not have its Python class. The
deprecation notice is tunelab's concern, not the user's, so it is silenced around these calls only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tunelab.export._text import brief

__all__ = ["compile_torchscript", "load_torchscript", "quiet_torchscript"]

# Outputs of the compiled module must match the eager module's this closely (float32 arithmetic that the
# compiler may reorder), on the example batch and on a batch of another size.
_RTOL, _ATOL = 1e-5, 1e-6


@contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's "torch.jit.* is deprecated" warnings (and only those) inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def compile_torchscript(model: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule | None, str]:
    """``model`` (eval mode, on the CPU) as a checked TorchScript module, or ``None`` and why not.

    Tracing comes first: it handles any module whose forward is tensor code. A trace that emits a
    ``TracerWarning`` (it froze a Python value, such as a shape, into a constant) or whose outputs differ from
    the module's is discarded, and ``torch.jit.script`` is tried instead. Returns ``(module, how)``, where
    ``how`` is "trace" or "script", or ``(None, reasons)``.
    """
    reasons: list[str] = []
    with torch.no_grad(), quiet_torchscript():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", torch.jit.TracerWarning)
                traced = torch.jit.trace(model, (example,), check_trace=False)
            tracer_warnings = [
                str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)
            ]
            if tracer_warnings:
                reasons.append(f"tracing froze a Python value into the graph ({tracer_warnings[0]})")
            else:
                mismatch = _mismatch(model, traced, example)
                if mismatch is None:
                    return traced, "trace"
                reasons.append(f"the traced module {mismatch}")
        except Exception as error:
            reasons.append(f"tracing failed ({type(error).__name__}: {brief(error)})")
        try:
            scripted = torch.jit.script(model)
            mismatch = _mismatch(model, scripted, example)
            if mismatch is None:
                return scripted, "script"
            reasons.append(f"the scripted module {mismatch}")
        except Exception as error:
            reasons.append(f"scripting failed ({type(error).__name__}: {brief(error)})")
    return None, "; ".join(reasons)


def load_torchscript(path: Path, *, device: torch.device) -> torch.jit.ScriptModule:
    """``torch.jit.load``: no Python class and no pickle are needed, only the archive."""
    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location=device)
    module.eval()
    return module


def _mismatch(model: nn.Module, compiled: torch.jit.ScriptModule, example: torch.Tensor) -> str | None:
    """Why ``compiled`` does not compute ``model``'s outputs, or ``None`` when it does.

    Checked on the example and on the example plus its first row, a batch of another size, which catches
    a batch size frozen into the graph.
    """
    for batch in (example, torch.cat([example, example[:1]])):
        expected, got = model(batch), compiled(batch)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"returns {shape} instead of {list(expected.shape)} for a batch of {len(batch)}"
        if not torch.allclose(got, expected, rtol=_RTOL, atol=_ATOL):
            difference = float((got - expected).abs().max())
            return f"differs from the module by up to {difference:.3g} on a batch of {len(batch)}"
    return None
