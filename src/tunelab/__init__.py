"""tunelab: train, tune, validate and export deep-learning models, faster.

The curated public API; everything else is reachable through the subpackages
(``tunelab.data``, ``tunelab.models``, ``tunelab.train``, ``tunelab.fused``, ``tunelab.search``).

The names load on first use (PEP 562): most of them need torch, scikit-learn or Optuna, which take seconds
to import, and ``import tunelab`` (the ``tunelab`` command's ``--help`` among others) should not pay for
what it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunelab.data import DataBundle, DataSpec, prepare_data
    from tunelab.errors import DataError, MissingExtraError, SpecError, TrainingError, TunelabError
    from tunelab.export import ExportedModel, export_model, load
    from tunelab.models import ModelSpec, build_model
    from tunelab.run import TrainResult, train_experiment
    from tunelab.spec import ExperimentSpec, load_spec, parse_spec
    from tunelab.train import Callback, History, Trainer, TrainSpec
    from tunelab.tune import TuneResult, tune_experiment

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "DataBundle",
    "DataError",
    "DataSpec",
    "ExperimentSpec",
    "ExportedModel",
    "History",
    "MissingExtraError",
    "ModelSpec",
    "SpecError",
    "TrainResult",
    "TrainSpec",
    "Trainer",
    "TrainingError",
    "TuneResult",
    "TunelabError",
    "__version__",
    "build_model",
    "export_model",
    "load",
    "load_spec",
    "parse_spec",
    "prepare_data",
    "train_experiment",
    "tune_experiment",
]

# The module that defines each public name (the same imports as the TYPE_CHECKING block above).
_ORIGINS = {
    "DataBundle": "tunelab.data",
    "DataSpec": "tunelab.data",
    "prepare_data": "tunelab.data",
    "DataError": "tunelab.errors",
    "MissingExtraError": "tunelab.errors",
    "SpecError": "tunelab.errors",
    "TrainingError": "tunelab.errors",
    "TunelabError": "tunelab.errors",
    "ExportedModel": "tunelab.export",
    "export_model": "tunelab.export",
    "load": "tunelab.export",
    "ModelSpec": "tunelab.models",
    "build_model": "tunelab.models",
    "TrainResult": "tunelab.run",
    "train_experiment": "tunelab.run",
    "ExperimentSpec": "tunelab.spec",
    "load_spec": "tunelab.spec",
    "parse_spec": "tunelab.spec",
    "Callback": "tunelab.train",
    "History": "tunelab.train",
    "Trainer": "tunelab.train",
    "TrainSpec": "tunelab.train",
    "TuneResult": "tunelab.tune",
    "tune_experiment": "tunelab.tune",
}

# Subpackages load on first access too, so that ``tunelab.train.Trainer`` works after a bare
# ``import tunelab``, as it would if this module imported them.
_SUBMODULES = frozenset(
    {"cli", "data", "errors", "export", "fused", "models", "report", "run", "search", "spec", "train", "tune"}
)


def __getattr__(name: str) -> Any:
    origin = _ORIGINS.get(name)
    if origin is not None:
        value = getattr(importlib.import_module(origin), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
