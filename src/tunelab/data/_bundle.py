"""The model-ready result of data preparation: train / validation / test tensors and how they were made."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tunelab.data._dataset import DataKind, Task
from tunelab.data._preprocessor import Preprocessor
from tunelab.data._splits import SplitIndices
from tunelab.inputs import TextInput

__all__ = ["DataBundle"]


@dataclass
class DataBundle:
    """Train / validation / test tensors with the fitted preprocessing.

    X: float32 ``[N, F]`` (tables), ``[N, C, H, W]`` (images), ``[N, L, F]`` (sequences, forecast windows) or
    ``[N, L + F]`` (text: ``L`` token ids, then ``F`` table features; ``text`` describes the layout).
    y: int64 class ids ``[N]`` (classification), or float32 ``[N, T]`` standardized targets (regression) /
    ``[N, horizon]`` (forecasting); ``target_scale`` = (mean, std) ``[output_dim]`` maps them back:
    ``y * std + mean``. ``indices`` are the row positions of each part in the source's main part (the test
    part is the source's own when ``indices.test`` is empty; for forecasting, positions of windows).
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    kind: DataKind
    n_classes: int | None  # classification only
    class_names: list[str] | None  # classification only, in class-id order
    feature_names: list[str]
    input_shape: tuple[int, ...]  # one sample of X
    output_dim: int  # n_classes logits, T regression targets, or the forecast horizon
    target_scale: tuple[torch.Tensor, torch.Tensor] | None = None
    preprocessor: Preprocessor | None = None
    text: TextInput | None = None  # text data only: the layout of its samples
    notices: list[str] = field(default_factory=list)
    indices: SplitIndices | None = None
    name: str = "data"

    def describe(self) -> str:
        """A few lines for a console: what the data is, the part sizes, the classes, and the notices."""
        shape = "x".join(map(str, self.input_shape))
        if self.task == "classification":
            names = self.class_names or []
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            target = f"{self.n_classes} classes ({shown})"
        elif self.task == "forecasting":
            target = f"the next {self.output_dim} value(s)"
        else:
            target = f"{self.output_dim} numeric target(s), standardized"
        lines = [
            f"{self.name}: {self.kind} {self.task}, samples of shape {shape} -> {target}",
            f"  rows: {len(self.y_train)} train / {len(self.y_val)} validation / {len(self.y_test)} test",
        ]
        lines += [f"  note: {notice}" for notice in self.notices]
        return "\n".join(lines)
