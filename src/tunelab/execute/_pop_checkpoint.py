"""A fused population's checkpoint in an artifact store: written every epoch, read by a retried pack.

The store is anything with Optuna's artifact-store protocol (:class:`ArtifactStore`): in production
:class:`tunelab.storage.DatabaseArtifactStore`, a table of the study's own database that every worker reaches.
A checkpoint is one artifact per pack, ``<prefix>population-<n>`` (n: the pack's first trial number), holding
(``torch.save``) only tensors, numbers, strings, None, lists and dicts, read back with ``torch.load(...,
weights_only=True)``::

    {"format": FORMAT_VERSION, "fold_index": i, "epoch": e,         # the last epoch done, within fold i
     "population": SpecPopulation.state()["shared"],
     "slots": [{"trial": number, "values": {epoch: value, ...},     # this fold's reported values so far
                "fold_values": [...], "best_epochs": [...],          # the folds before i
                "state": SpecPopulation.state()["members"][k]}, ...]}  # one per live member, slot order
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

import torch
from optuna.artifacts.exceptions import ArtifactNotFound

from tunelab.search import TrialHandle

__all__ = ["FORMAT_VERSION", "ArtifactStore", "PackCheckpoints", "read_checkpoint"]

FORMAT_VERSION = 1


class ArtifactStore(Protocol):
    """Optuna's artifact-store protocol (``optuna.artifacts``): bytes under an id."""

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """The artifact's bytes; :class:`~optuna.artifacts.exceptions.ArtifactNotFound` when absent."""
        ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class PackCheckpoints:
    """One pack's checkpoint artifact: :meth:`write` replaces it (the first write of each trial names it in
    the trial's ``checkpoint`` user attribute), :meth:`remove` deletes it once the pack is over."""

    def __init__(self, store: ArtifactStore, artifact_id: str) -> None:
        self.store, self.artifact_id = store, artifact_id
        self.written = False
        self._named: set[int] = set()  # trials whose "checkpoint" attribute names this artifact

    def write(self, payload: dict[str, Any], handles: Sequence[TrialHandle]) -> None:
        """Store ``payload`` (the checkpoint of ``handles``' trials) under this pack's id."""
        for handle in handles:
            if handle.number not in self._named:
                handle.set_attr("checkpoint", self.artifact_id)
                self._named.add(handle.number)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        buffer.seek(0)
        self.store.write(self.artifact_id, buffer)
        self.written = True

    def remove(self) -> None:
        """Delete the artifact, if this pack wrote one (gone already: nothing to do)."""
        if not self.written:
            return
        self.discard(self.artifact_id)
        self.written = False

    def discard(self, artifact_id: str) -> None:
        """Delete the artifact ``artifact_id`` (another pack's, which nothing will resume from), if any."""
        with contextlib.suppress(ArtifactNotFound):
            self.store.remove(artifact_id)


def read_checkpoint(store: ArtifactStore, artifact_id: str) -> dict[str, Any] | None:
    """The checkpoint stored under ``artifact_id``, or None when there is none, or none of this format."""
    try:
        with store.open_reader(artifact_id) as reader:
            content = reader.read()
    except ArtifactNotFound:
        return None
    try:
        # weights_only: tensors and plain containers only; an artifact holding anything else does not load.
        checkpoint = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError):
        return None  # not a checkpoint this code wrote: the pack trains from scratch
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT_VERSION:
        return None
    return checkpoint
