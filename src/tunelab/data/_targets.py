"""Targets: class labels ↔ class ids, and standardized regression / forecasting targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import LabelEncoder, StandardScaler

from tunelab.data._hints import listing
from tunelab.errors import DataError

__all__ = ["ClassTarget", "ScaledTarget"]


@dataclass(frozen=True)
class ClassTarget:
    """Class labels (the source's own values) ↔ int64 class ids ``0 .. n_classes - 1`` (sorted labels)."""

    classes: np.ndarray  # [n_classes] the labels, sorted
    names: list[str]  # [n_classes] display names

    @classmethod
    def fit(cls, labels: np.ndarray, *, label_names: list[str] | None = None) -> ClassTarget:
        """Learn the sorted class list. ``label_names[i]`` names the integer label ``i`` (e.g. Fashion-MNIST's
        "Trouser" for 1); without it a class is named by its label as text.

        Fit it on every label of the dataset, not only the training part, so that each fold and seed has the
        same classes and output size; the list of labels carries no statistic of the data.
        """
        classes = LabelEncoder().fit(labels).classes_
        if (
            label_names is not None
            and classes.dtype.kind in "iu"
            and 0 <= classes.min() <= classes.max() < len(label_names)
        ):
            names = [label_names[label] for label in classes]
        else:
            names = [str(label) for label in classes]
        return cls(classes=classes, names=names)

    @property
    def output_dim(self) -> int:
        return len(self.classes)

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Labels ``[N]`` → class ids int64 ``[N]``; an unknown label raises :class:`DataError`."""
        labels = np.asarray(labels).reshape(-1)
        codes = pd.Index(self.classes).get_indexer(labels).astype(np.int64)
        if (codes < 0).any():
            unknown = pd.unique(labels[codes < 0])
            raise DataError(
                f"labels {listing(map(str, unknown[:5]))} are not among the trained classes "
                f"{listing(self.names)}. Fix: remove those rows, or retrain with them."
            )
        return codes

    def decode(self, predictions: np.ndarray) -> np.ndarray:
        """Class ids ``[N]`` or logits / probabilities ``[N, n_classes]`` → the labels ``[N]``."""
        ids = predictions.argmax(axis=-1) if predictions.ndim == 2 else predictions.astype(np.int64)
        return self.classes[ids]

    def to_state(self) -> dict[str, Any]:
        return {"type": "classes", "classes": self.classes.tolist(), "names": list(self.names)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassTarget:
        return cls(classes=np.asarray(state["classes"]), names=[str(name) for name in state["names"]])


@dataclass(frozen=True)
class ScaledTarget:
    """Numeric targets ``[N, T]`` ↔ standardized float32 ``[N, T]`` with the training part's mean and std."""

    mean: np.ndarray  # [T]
    scale: np.ndarray  # [T]

    @classmethod
    def fit(cls, targets: np.ndarray) -> ScaledTarget:
        scaler = StandardScaler().fit(_columns(targets))
        return cls(mean=scaler.mean_, scale=scaler.scale_)

    @property
    def output_dim(self) -> int:
        return len(self.mean)

    def encode(self, targets: np.ndarray) -> np.ndarray:
        return ((_columns(targets) - self.mean) / self.scale).astype(np.float32)

    def decode(self, predictions: np.ndarray) -> np.ndarray:
        """Standardized predictions ``[N, T]`` → original units (float64)."""
        return _columns(predictions) * self.scale + self.mean

    def to_state(self) -> dict[str, Any]:
        return {"type": "scaled", "mean": self.mean.copy(), "scale": self.scale.copy()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScaledTarget:
        return cls(
            mean=np.asarray(state["mean"], dtype=np.float64),
            scale=np.asarray(state["scale"], dtype=np.float64),
        )


def _columns(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values
