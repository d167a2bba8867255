"""tunelab: train, tune, validate and export deep-learning models, faster.

The curated public API; everything else is reachable through the subpackages
(``tunelab.data``, ``tunelab.models``, ``tunelab.train``, ``tunelab.fused``, ``tunelab.search``).
"""

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
