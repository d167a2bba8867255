"""Checkpoints: everything needed to continue a run exactly, as tensors and plain Python values only.

A checkpoint loads with ``torch.load(path, weights_only=True)``: no pickled objects, so loading one from an
untrusted run directory cannot execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

import torch

from tunelab.errors import SpecError

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


class Checkpoint(TypedDict):
    """The state of a run after ``epoch`` completed epochs."""

    format: int
    epoch: int
    spec: dict[str, Any]  # TrainSpec.model_dump(mode="json")
    model: dict[str, torch.Tensor]  # model.state_dict()
    optimizer: dict[str, Any]  # optimizer.state_dict()
    best_model: dict[str, torch.Tensor] | None  # the best epoch's weights when they are to be restored
    monitor: dict[str, Any]  # MonitorState of the monitored quantity (early stopping, best.pt)
    plateau: dict[str, Any]  # PlateauState of the plateau schedule, flattened
    history: dict[str, Any]  # History.to_dict()
    rng: dict[str, torch.Tensor]  # "data": the trainer's generator; "cpu"/"cuda": the model's (dropout) RNG
    scaler: dict[str, Any] | None  # GradScaler.state_dict() with amp


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors mapped to ``map_location``)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"checkpoint '{path}' does not exist. Expected a checkpoint.pt or best.pt from a run directory."
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise SpecError(
            f"cannot read checkpoint '{path}': {err}. Expected a file written by tunelab's trainer."
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise SpecError(
            f"'{path}' is not a tunelab checkpoint of format {CHECKPOINT_FORMAT} (found {found!r}). "
            "Resume from the checkpoint.pt written by the same tunelab version."
        )
    return data  # type: ignore[return-value]
