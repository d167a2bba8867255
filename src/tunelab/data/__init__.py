"""Data: sources, preprocessing fitted on the training part only, and honest splits.

``DataSpec`` says where the data is and how to split it; ``load_dataset`` reads it raw; ``prepare_data``
returns a ``DataBundle`` of train / validation / test tensors with the fitted ``Preprocessor``.

>>> from tunelab.data import DataSpec, prepare_data
>>> bundle = prepare_data(DataSpec(source="digits"), seed=0)
>>> bundle.X_train.shape[1:], bundle.n_classes
(torch.Size([1, 8, 8]), 10)
"""

from tunelab.data._builtin import BUILTIN_NAMES, FASHION_MNIST_CLASSES
from tunelab.data._bundle import DataBundle
from tunelab.data._dataset import DataKind, Dataset, Task
from tunelab.data._idx import read_idx
from tunelab.data._new_inputs import NewInputs, read_new_inputs
from tunelab.data._prepare import prepare_data
from tunelab.data._preprocessor import Preprocessor
from tunelab.data._season import infer_season, season_length
from tunelab.data._sources import load_dataset
from tunelab.data._spec import DataSpec, SplitSpec
from tunelab.data._splits import SplitIndices, n_splits, split_indices

__all__ = [
    "BUILTIN_NAMES",
    "FASHION_MNIST_CLASSES",
    "DataBundle",
    "DataKind",
    "DataSpec",
    "Dataset",
    "NewInputs",
    "Preprocessor",
    "SplitIndices",
    "SplitSpec",
    "Task",
    "infer_season",
    "load_dataset",
    "n_splits",
    "prepare_data",
    "read_idx",
    "read_new_inputs",
    "season_length",
    "split_indices",
]
