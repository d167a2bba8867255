"""The fitted preprocessing of a dataset: raw rows → model-ready tensors, predictions → labels / units."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from tunelab.data._array_features import ImageFeatures, SequenceFeatures
from tunelab.data._dataset import DataKind, Task
from tunelab.data._hints import listing
from tunelab.data._table_features import TableFeatures, WindowFeatures
from tunelab.data._targets import ClassTarget, ScaledTarget
from tunelab.data._text_features import TextFeatures
from tunelab.errors import DataError
from tunelab.inputs import TextInput

__all__ = ["Preprocessor"]

FeatureTransform = TableFeatures | WindowFeatures | ImageFeatures | SequenceFeatures | TextFeatures
TargetTransform = ClassTarget | ScaledTarget

STATE_VERSION = 1
_FEATURES: dict[str, type[FeatureTransform]] = {
    "table": TableFeatures,
    "window": WindowFeatures,
    "image": ImageFeatures,
    "sequence": SequenceFeatures,
    "text": TextFeatures,
}
_TARGETS: dict[str, type[TargetTransform]] = {"classes": ClassTarget, "scaled": ScaledTarget}


class Preprocessor:
    """Feature and target transforms fitted on a training part.

    ``transform`` turns new raw data (a DataFrame for tables and series, an array for images and sequences)
    into a float32 tensor of the training layout; ``inverse_target`` turns model outputs back into labels or
    original units. ``to_state`` / ``from_state`` round-trip it through plain values and numpy arrays.
    """

    def __init__(
        self, features: FeatureTransform, target: TargetTransform, *, task: Task, kind: DataKind
    ) -> None:
        self.features = features
        self.target = target
        self.task: Task = task
        self.kind: DataKind = kind

    def __repr__(self) -> str:
        return (
            f"Preprocessor(task={self.task!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"output_dim={self.output_dim})"
        )

    @property
    def feature_names(self) -> list[str]:
        """Names of the model's input features (table columns after one-hot; channels for images)."""
        return self.features.output_names

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one transformed sample: ``(F,)``, ``(C, H, W)`` or ``(L, F)``."""
        return self.features.input_shape

    @property
    def text_input(self) -> TextInput | None:
        """The layout of text samples (token ids, then table features); None for other data."""
        return self.features.text_input if isinstance(self.features, TextFeatures) else None

    @property
    def output_dim(self) -> int:
        """Model outputs per sample: classes, regression targets, or forecast horizon."""
        return self.target.output_dim

    @property
    def class_names(self) -> list[str] | None:
        return self.target.names if isinstance(self.target, ClassTarget) else None

    @property
    def target_scale(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, std)`` float32 ``[output_dim]`` of standardized numeric targets; ``None`` for classes."""
        if isinstance(self.target, ScaledTarget):
            return torch.tensor(self.target.mean, dtype=torch.float32), torch.tensor(
                self.target.scale, dtype=torch.float32
            )
        return None

    def transform(self, data: pd.DataFrame | np.ndarray) -> torch.Tensor:
        """Raw rows → float32 features ``[N, *input_shape]``.

        Tables take a DataFrame with (at least) the training columns; a series gives one window per position
        (``[T - window + 1, window, F]``); images and sequences take arrays. A text model takes a DataFrame
        with its text (and other) columns, or, when it reads one text column alone, a list of strings.
        """
        if isinstance(self.features, TextFeatures) and not isinstance(data, pd.DataFrame):
            columns = self.input_columns
            texts = np.asarray(data, dtype=object)
            if len(columns) != 1 or texts.ndim != 1:
                raise DataError(
                    f"this text model reads the columns {listing(columns)}; pass a DataFrame with them"
                    + ("" if len(columns) != 1 else f", or a list of strings (got shape {list(texts.shape)})")
                )
            data = pd.DataFrame({columns[0]: texts})
            return _tensor(self.features.apply(data))
        if isinstance(self.features, TableFeatures | WindowFeatures | TextFeatures):
            if not isinstance(data, pd.DataFrame):
                columns = self.input_columns
                array = np.asarray(data)
                if array.ndim != 2 or array.shape[1] != len(columns):
                    raise DataError(
                        f"a table model takes a DataFrame, or a 2-D array with one column per input column "
                        f"({len(columns)}: {listing(columns)}); got an array of shape {list(array.shape)}"
                    )
                data = pd.DataFrame(array, columns=columns)
            return _tensor(self.features.apply(data))
        if isinstance(data, pd.DataFrame):
            raise DataError(f"a model for {self.kind}s takes an array, not a DataFrame")
        return _tensor(self.features.apply(data))

    @property
    def input_columns(self) -> list[str]:
        """The raw input columns a table or series needs, in order (empty for arrays)."""
        if isinstance(self.features, WindowFeatures):
            return self.features.table.input_columns
        if isinstance(self.features, TableFeatures | TextFeatures):
            return self.features.input_columns
        return []

    def transform_target(self, targets: np.ndarray) -> torch.Tensor:
        """Raw targets → int64 class ids ``[N]`` or standardized float32 ``[N, T]``."""
        return _tensor(self.target.encode(np.asarray(targets)))

    def inverse_target(self, predictions: torch.Tensor | np.ndarray) -> np.ndarray:
        """Model outputs → labels ``[N]`` (from logits ``[N, C]`` or ids ``[N]``), or ``[N, T]`` in units.

        Labels are the source's own values (``class_names`` holds their display names).
        """
        if isinstance(predictions, torch.Tensor):
            predictions = predictions.detach().cpu().numpy()
        return self.target.decode(np.asarray(predictions))

    def to_state(self) -> dict[str, Any]:
        """Plain values (str, int, float, lists, dicts) and numpy arrays only: storable without pickle."""
        return {
            "version": STATE_VERSION,
            "task": self.task,
            "kind": self.kind,
            "features": self.features.to_state(),
            "target": self.target.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        """Rebuild the preprocessor ``to_state`` described (numpy arrays may come back as lists)."""
        version = state.get("version")
        if version != STATE_VERSION:
            raise DataError(
                f"preprocessor state version {version!r} is not supported (expected {STATE_VERSION}); "
                "export the model again with this tunelab version"
            )
        features_type, target_type = state["features"]["type"], state["target"]["type"]
        if features_type not in _FEATURES or target_type not in _TARGETS:
            raise DataError(f"unknown preprocessor parts in the state: {features_type!r}, {target_type!r}")
        features = _FEATURES[features_type].from_state(state["features"])
        target = _TARGETS[target_type].from_state(state["target"])
        return cls(features, target, task=state["task"], kind=state["kind"])


def _tensor(array: np.ndarray) -> torch.Tensor:
    # torch warns on (and must not share) read-only numpy memory, which pandas' copy-on-write can hand out.
    return torch.from_numpy(array if array.flags.writeable else array.copy())
