"""Sensible default experiments for the zero-config ``tunelab tune --data PATH``: a model family and a search
space per kind of data (tables → MLP, images → CNN, sequences → LSTM / GRU)."""

from __future__ import annotations

from typing import Any

from tunelab.errors import SpecError

__all__ = ["MODEL_FAMILIES", "SMALL_TABLE_ROWS", "default_experiment"]

MODEL_FAMILIES = ("mlp", "cnn", "rnn", "lstm", "gru")

_COMMON_TRAIN: dict[str, Any] = {
    "optimizer": "adamw",
    "schedule": {"name": "cosine"},
    "early_stopping": {"monitor": "val_loss", "patience": 6, "restore_best": True},
}

_SPACES: dict[str, dict[str, Any]] = {
    "mlp": {
        "train.lr": {"float": [3e-4, 3e-2], "log": True},
        "train.weight_decay": {"float": [1e-6, 1e-2], "log": True},
        "train.batch_size": {"choice": [32, 64, 128]},
        "_depth": {"int": [1, 3]},
        "model.hidden": {"per_layer": "_depth", "int": [32, 512], "log": True},
        "model.dropout": {"float": [0.0, 0.5]},
        "model.batch_norm": {"choice": [True, False]},
    },
    "cnn": {
        "train.lr": {"float": [3e-4, 1e-2], "log": True},
        "train.weight_decay": {"float": [1e-6, 1e-3], "log": True},
        "train.batch_size": {"choice": [64, 128]},
        "_blocks": {"int": [1, 3]},
        "model.channels": {"per_layer": "_blocks", "choice": [16, 32, 64]},
        "model.dropout": {"float": [0.0, 0.5]},
    },
    "rnn": {
        "train.lr": {"float": [3e-4, 1e-2], "log": True},
        "train.weight_decay": {"float": [1e-6, 1e-3], "log": True},
        "train.batch_size": {"choice": [32, 64, 128]},
        "model.cell": {"choice": ["lstm", "gru"]},
        "model.hidden_size": {"choice": [32, 64, 128]},
        "model.n_layers": {"int": [1, 2]},
        "train.grad_clip": {"float": [0.5, 5.0], "log": True},
    },
}

# Small tables: 5-fold cross-validation inside the search (one holdout of a few hundred rows is too noisy to
# choose by), and a space that contains the linear model (no hidden layer: logistic / linear regression) and
# narrow one-layer networks, with weight decay up to strong, so the search cannot lose to the linear model it
# holds. It starts from that linear model (one known-good configuration: a waiting trial of another structure
# would end the first fused population at one member).
SMALL_TABLE_ROWS = 5000
SMALL_TABLE_FOLDS = 5
# An epoch is a few steps there: 100 epochs (patience 10) let the linear model converge, and ASHA's first rung
# waits 10 epochs, since a few steps say little.
_SMALL_TABLE_SPACE: dict[str, Any] = {
    "train.lr": {"float": [1e-3, 1e-1], "log": True},
    "train.weight_decay": {"float": [1e-5, 3e-1], "log": True},
    "train.batch_size": {"choice": [16, 32, 64]},
    "_depth": {"int": [0, 2]},
    "model.hidden": {"per_layer": "_depth", "int": [8, 256], "log": True},
    "model.dropout": {"float": [0.0, 0.5]},
    "model.batch_norm": {"choice": [True, False]},
}
_SMALL_TABLE_START: list[dict[str, Any]] = [
    {"_depth": 0, "train.lr": 3e-2, "train.weight_decay": 1e-2, "train.batch_size": 32},
]
_SMALL_TABLE_TRAIN: dict[str, Any] = {
    "epochs": 100,
    "early_stopping": {"monitor": "val_loss", "patience": 10, "restore_best": True},
}
_EPOCHS = {"mlp": 40, "cnn": 15, "rnn": 30}
_KIND_FAMILY = {"table": "mlp", "image": "cnn", "sequence": "rnn"}


def default_experiment(
    data: dict[str, Any],
    *,
    kind: str,
    model: str | None = None,
    name: str = "tune",
    n_rows: int | None = None,
) -> dict[str, Any]:
    """An experiment mapping (for `tunelab.spec.parse_spec`) with a search space for this kind of data;
    a table of fewer than ``SMALL_TABLE_ROWS`` rows (``n_rows``) gets the small-data protocol above."""
    family = model or _KIND_FAMILY[kind]
    if family not in MODEL_FAMILIES:
        raise SpecError(
            f"--model '{family}' is not a model family; choose one of {', '.join(MODEL_FAMILIES)}."
        )
    if family == "cnn" and kind != "image":
        raise SpecError(
            f"--model cnn needs image data, but this data is a {kind}; use mlp (or rnn for sequences)."
        )
    if family in ("rnn", "lstm", "gru") and kind != "sequence":
        raise SpecError(f"--model {family} needs sequence data, but this data is a {kind}; use mlp or cnn.")
    key = "rnn" if family in ("lstm", "gru") else family
    model_spec: dict[str, Any] = {"type": key}
    space = dict(_SPACES[key])
    if family in ("lstm", "gru"):
        model_spec["cell"] = family
        space.pop("model.cell")
    search: dict[str, Any] = {"space": space}
    train = {**_COMMON_TRAIN, "epochs": _EPOCHS[key]}
    if kind == "table" and key == "mlp" and n_rows is not None and n_rows < SMALL_TABLE_ROWS:
        search = {
            "space": dict(_SMALL_TABLE_SPACE),
            "cv": SMALL_TABLE_FOLDS,
            "start_from": _SMALL_TABLE_START,
            "scheduler": {"name": "asha", "min_epochs": 10},
        }
        train |= _SMALL_TABLE_TRAIN
    return {"name": name, "data": data, "model": model_spec, "train": train, "search": search}
