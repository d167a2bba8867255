"""``ExportedModel``: a loaded export that turns raw data into labels or values in the user's own units."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from tunelab.data import Preprocessor
from tunelab.errors import DataError, SpecError

__all__ = ["Backend", "ExportedModel"]

Backend = Literal["torchscript", "weights", "onnx"]
Data = pd.DataFrame | np.ndarray | torch.Tensor
_BATCH_SIZE = 1024


class ExportedModel:
    """A trained model with its fitted preprocessing, as :func:`tunelab.export.load` returns it.

    ``predict`` takes what the training data looked like: a DataFrame for tables and series (extra columns,
    such as the target, are ignored), an array or tensor for images ``[N, C, H, W]`` and sequences
    ``[N, L, F]``; a table may also come as a 2-D array of its input columns in order. The model runs in eval
    mode, without gradients, in batches.

    Attributes: ``task``, ``kind``, ``input_shape`` (one sample after preprocessing), ``output_dim``,
    ``class_names`` and ``classes`` (classification), ``input_columns`` (tables and series),
    ``metadata`` (the export's ``metadata.json``), ``module`` (the torch module that runs: with the "onnx"
    backend an :class:`~tunelab.export.OnnxModule`, whose ``session`` is onnxruntime's), ``backend``
    ("torchscript", "weights" or "onnx"), ``path``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        metadata: dict[str, Any],
        preprocessor: Preprocessor | None,
        backend: Backend,
        path: Path,
        device: torch.device,
    ) -> None:
        self.module = module.eval()
        self.metadata = metadata
        self.preprocessor = preprocessor
        self.backend: Backend = backend
        self.path = path
        self.device = device
        self.task: str = metadata["task"]
        self.kind: str = metadata["kind"]
        self.input_shape: tuple[int, ...] = tuple(metadata["input_shape"])
        self.output_dim: int = metadata["output_dim"]
        self.class_names: list[str] | None = metadata.get("class_names")
        self.input_columns: list[str] = list(metadata.get("input_columns") or [])

    def __repr__(self) -> str:
        return (
            f"ExportedModel(task={self.task!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"output_dim={self.output_dim}, backend={self.backend!r}, path='{self.path}')"
        )

    @property
    def n_classes(self) -> int | None:
        """Classes of a classifier (2 for a one-logit binary model); ``None`` otherwise."""
        if self.task != "classification":
            return None
        return max(2, self.output_dim) if self.class_names is None else len(self.class_names)

    @property
    def classes(self) -> np.ndarray | None:
        """The labels ``predict`` returns, in class-id order: the training data's own values."""
        if self.n_classes is None:
            return None
        ids = np.arange(self.n_classes)
        return ids if self.preprocessor is None else self.preprocessor.inverse_target(ids)

    # ------------------------------------------------------------------ predictions

    def predict(self, data: Data, *, batch_size: int = _BATCH_SIZE) -> np.ndarray:
        """Labels ``[N]`` (classification), or values in the original units: ``[N]`` for one target,
        ``[N, T]`` for T targets or a forecast horizon of T. A series gives one forecast per window of its
        rows, in order: ``[rows - window + 1]`` forecasts, the last one beyond the series' end."""
        outputs = self._outputs(self.features(data), batch_size)
        if self.task == "classification":
            return self._labels(self._probabilities(outputs))
        return _squeeze(self._values(outputs))

    def predict_proba(self, data: Data, *, batch_size: int = _BATCH_SIZE) -> np.ndarray:
        """Class probabilities float32 ``[N, n_classes]``, columns in the order of ``classes``."""
        if self.task != "classification":
            raise SpecError(
                f"predict_proba is for classification, but this model does {self.task}. Use predict()."
            )
        return self._probabilities(self._outputs(self.features(data), batch_size))

    def predict_frame(self, data: Data, *, batch_size: int = _BATCH_SIZE) -> pd.DataFrame:
        """Predictions as a DataFrame: a ``prediction`` column (``prediction_1 .. prediction_T`` for T
        outputs or forecast steps), and for classification one ``proba_<class name>`` column per class.

        The index is the input frame's (tables), each window's last row's label (series), or 0..N-1.
        """
        outputs = self._outputs(self.features(data), batch_size)
        index = self._index(data, len(outputs))
        if self.task == "classification":
            probabilities = self._probabilities(outputs)
            frame = pd.DataFrame({"prediction": self._labels(probabilities)}, index=index)
            names = self.class_names or [str(label) for label in np.asarray(self.classes)]
            for name, column in zip(names, probabilities.T, strict=True):
                frame[f"proba_{name}"] = column
            return frame
        values = self._values(outputs)
        n_outputs = values.shape[1]
        columns = ["prediction"] if n_outputs == 1 else [f"prediction_{i + 1}" for i in range(n_outputs)]
        return pd.DataFrame(values, index=index, columns=columns)

    def features(self, data: Data) -> torch.Tensor:
        """Raw data → the model's float32 input ``[N, *input_shape]`` (the fitted preprocessing, if any)."""
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        if isinstance(data, pd.Series):
            raise DataError(
                "predict takes a DataFrame of rows, not a Series; for one row use frame.iloc[[i]] "
                "(double brackets keep it a DataFrame)"
            )
        if not isinstance(data, pd.DataFrame | np.ndarray):
            data = np.asarray(data)
        if self.preprocessor is not None:
            x = self.preprocessor.transform(data)
        else:
            x = _as_float_tensor(data.to_numpy() if isinstance(data, pd.DataFrame) else data)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"the data gives model inputs of shape {list(x.shape)}, but the model takes "
                f"[N, {', '.join(map(str, self.input_shape))}]. Fix: pass samples shaped like the "
                "training data."
            )
        return x

    # ------------------------------------------------------------------ internals

    def _outputs(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Raw model outputs float32 ``[N, output_dim]`` on the CPU."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SpecError(f"batch_size must be an int >= 1; got {batch_size!r}")
        if len(x) == 0:
            return torch.zeros((0, self.output_dim))
        with torch.no_grad():
            parts = [
                self.module(x[start : start + batch_size].to(self.device)).float().cpu()
                for start in range(0, len(x), batch_size)
            ]
        return torch.cat(parts).reshape(len(x), self.output_dim)

    def _probabilities(self, outputs: torch.Tensor) -> np.ndarray:
        if self.output_dim == 1:  # one logit (binary cross-entropy): the probability of class 1
            positive = torch.sigmoid(outputs[:, 0])
            return torch.stack([1.0 - positive, positive], dim=1).numpy()
        return torch.softmax(outputs, dim=1).numpy()

    def _labels(self, probabilities: np.ndarray) -> np.ndarray:
        if self.preprocessor is None:
            return probabilities.argmax(axis=1)
        return self.preprocessor.inverse_target(probabilities)

    def _values(self, outputs: torch.Tensor) -> np.ndarray:
        """Outputs in the original units, ``[N, T]``."""
        if self.preprocessor is None:
            return outputs.numpy()
        return self.preprocessor.inverse_target(outputs).reshape(len(outputs), -1)

    def _index(self, data: Data, n_rows: int) -> pd.Index:
        if isinstance(data, pd.DataFrame):
            if self.kind == "sequence" and self.input_columns:  # a series: window i ends at row i + L - 1
                return data.index[len(data) - n_rows :]
            return data.index
        return pd.RangeIndex(n_rows)


def _as_float_tensor(array: np.ndarray) -> torch.Tensor:
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"the data must be numeric for this model (it has no preprocessing): {error}"
        ) from error
    return torch.from_numpy(values.copy())


def _squeeze(values: np.ndarray) -> np.ndarray:
    return values[:, 0] if values.shape[1] == 1 else values
