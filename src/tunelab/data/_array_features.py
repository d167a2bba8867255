"""Array features: images scaled to [0, 1], sequences standardized per feature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.preprocessing import StandardScaler

from tunelab.errors import DataError

__all__ = ["ImageFeatures", "SequenceFeatures"]


@dataclass(frozen=True)
class ImageFeatures:
    """Images ``[N, C, H, W]`` (or ``[N, H, W]`` when C = 1) → float32 pixels in [0, 1].

    Integer images are divided by their dtype's maximum (255 for uint8); float images by the training part's
    largest value when it exceeds 1 (scikit-learn's digits hold 0-16).
    """

    shape: tuple[int, int, int]  # (C, H, W)
    pixel_scale: float

    @classmethod
    def fit(cls, images: np.ndarray) -> ImageFeatures:
        if images.dtype.kind in "iu":
            scale = float(np.iinfo(images.dtype).max)
        else:
            scale = max(1.0, float(images.max())) if images.size else 1.0
        return cls(shape=(images.shape[1], images.shape[2], images.shape[3]), pixel_scale=scale)

    @property
    def output_names(self) -> list[str]:
        return [f"channel_{index}" for index in range(self.shape[0])]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape

    def apply(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3 and self.shape[0] == 1:
            images = images[:, None]
        if images.ndim != 4 or images.shape[1:] != self.shape:
            raise DataError(
                f"images of shape {list(images.shape)} do not match the training images: expected "
                f"[N, {', '.join(map(str, self.shape))}] (channels first). Fix: resize or transpose them."
            )
        return images.astype(np.float32) / np.float32(self.pixel_scale)

    def to_state(self) -> dict[str, Any]:
        return {"type": "image", "shape": list(self.shape), "pixel_scale": self.pixel_scale}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImageFeatures:
        channels, height, width = (int(size) for size in state["shape"])
        return cls(shape=(channels, height, width), pixel_scale=float(state["pixel_scale"]))


@dataclass(frozen=True)
class SequenceFeatures:
    """Sequences ``[N, L, F]`` → float32, each of the F features standardized over the training steps."""

    length: int
    mean: np.ndarray  # [F]
    scale: np.ndarray  # [F]

    @classmethod
    def fit(cls, sequences: np.ndarray) -> SequenceFeatures:
        scaler = StandardScaler().fit(sequences.reshape(-1, sequences.shape[2]).astype(np.float64))
        return cls(length=sequences.shape[1], mean=scaler.mean_, scale=scaler.scale_)

    @property
    def output_names(self) -> list[str]:
        return [f"x{index}" for index in range(len(self.mean))]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.length, len(self.mean))

    def apply(self, sequences: np.ndarray) -> np.ndarray:
        sequences = np.asarray(sequences)
        if sequences.ndim != 3 or sequences.shape[2] != len(self.mean):
            raise DataError(
                f"sequences of shape {list(sequences.shape)} do not match the training data: expected "
                f"[N, L, {len(self.mean)}] (samples, steps, features)."
            )
        return ((sequences.astype(np.float64) - self.mean) / self.scale).astype(np.float32)

    def to_state(self) -> dict[str, Any]:
        return {
            "type": "sequence",
            "length": self.length,
            "mean": self.mean.copy(),
            "scale": self.scale.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SequenceFeatures:
        return cls(
            length=int(state["length"]),
            mean=np.asarray(state["mean"], dtype=np.float64),
            scale=np.asarray(state["scale"], dtype=np.float64),
        )
