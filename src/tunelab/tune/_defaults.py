"""Sensible default experiments for the zero-config ``tunelab tune --data PATH``: a model family and a search
space per kind of data (tables → MLP, images → CNN, sequences → LSTM / GRU, text → bags of embeddings, TextCNN
and recurrent text models; a series to forecast → a linear model, an MLP and LSTM / GRU on lags, with the
number of lags searched)."""

from __future__ import annotations

from typing import Any

from tunelab.errors import SpecError

__all__ = ["MODEL_FAMILIES", "SMALL_TABLE_ROWS", "default_experiment"]

MODEL_FAMILIES = ("mlp", "cnn", "rnn", "lstm", "gru", "linear", "text")

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
    # Text: the encoder is searched with its own knobs; bags of embeddings train in seconds and are strong on
    # topics, TextCNN and GRUs read word order. Hashed bigrams (model.ngrams: 2) are not searched by default:
    # on fortunes they cost 7x the time of a bag and lost 6-9 points of validation accuracy.
    "text": {
        "train.lr": {"float": [1e-3, 3e-2], "log": True},
        "train.weight_decay": {"float": [1e-6, 1e-2], "log": True},
        "train.batch_size": {"choice": [32, 64, 128]},
        "model.encoder": {"choice": ["bag", "cnn", "gru"]},
        "model.embedding_dim": {"choice": [32, 64, 128]},
        "model.dropout": {"float": [0.0, 0.5]},
        "model.pooling": {
            "choice": ["weighted", "mean", "max", "mean_max"],
            "when": {"model.encoder": ["bag", "gru"]},
        },
        "model.channels": {"choice": [32, 64, 128], "when": {"model.encoder": "cnn"}},
        "model.hidden_size": {"choice": [32, 64, 128], "when": {"model.encoder": "gru"}},
    },
}

# Small tables: 5-fold cross-validation inside the search (one holdout of a few hundred rows is too noisy to
# choose by), and a space that contains the linear model (no hidden layer: logistic / linear regression) and
# narrow one-layer networks, with weight decay up to strong, so the search cannot lose to the linear model it
# holds. It starts from that linear model trained to its optimum by L-BFGS (logistic / ridge regression, the
# penalty weight_decay / 2 * |w|^2). A search that tries L-BFGS trains its trials one at a time.
SMALL_TABLE_ROWS = 5000
SMALL_TABLE_FOLDS = 5
# An epoch is a few steps there: 100 epochs (patience 10) let the linear model converge, and ASHA's first rung
# waits 10 epochs, since a few steps say little.
_SMALL_TABLE_SPACE: dict[str, Any] = {
    "train.optimizer": {"choice": ["adamw", "lbfgs"]},
    "train.lr": {"float": [1e-3, 1e-1], "log": True},
    "train.weight_decay": {"float": [1e-5, 3e-1], "log": True},
    "train.batch_size": {"choice": [16, 32, 64]},
    "_depth": {"int": [0, 2]},
    "model.hidden": {"per_layer": "_depth", "int": [8, 256], "log": True},
    "model.dropout": {"float": [0.0, 0.5]},
    "model.batch_norm": {"choice": [True, False]},
}
_SMALL_TABLE_FIRST: list[dict[str, Any]] = [
    {"_depth": 0, "train.optimizer": "lbfgs", "train.weight_decay": 1e-2},
]
_SMALL_TABLE_TRAIN: dict[str, Any] = {
    "epochs": 100,
    "early_stopping": {"monitor": "val_loss", "patience": 10, "restore_best": True},
}
_EPOCHS = {"mlp": 40, "cnn": 15, "rnn": 30, "text": 30}
# Text: the search starts from a bag of embeddings (fastText-like) pooled by a mean weighted with learned
# token weights that start at each token's inverse document frequency: a fraction of a second an epoch. On
# fortunes' topics (bench/text_pooling.py: 3 splits, trained on 1,679 rows) it scored 0.645 / 0.627 / 0.654
# on held-back rows where the plain mean scored 0.613 / 0.569 / 0.617 and TF-IDF + logistic regression (C by
# 5-fold CV) on the same rows 0.639 / 0.614 / 0.645; so a small budget has it to beat.
_TEXT_FIRST: list[dict[str, Any]] = [
    {
        "model.encoder": "bag",
        "model.embedding_dim": 128,
        "model.pooling": "weighted",
        "model.dropout": 0.3,
        "train.lr": 1e-2,
        "train.weight_decay": 1e-4,
        "train.batch_size": 32,
    }
]
# Images: the search starts from a known-good small-image CNN, so that a budget that allows one trial still
# gives a good model, and the sampler explores around it: two conv blocks of 32 and 64 channels (batch norm,
# which every zero-config CNN has, and 2x2 max-pooling), the dense layer of 128, dropout 0.25, AdamW at 1e-3,
# batch 64 (the hand-built two-conv networks of the Fashion-MNIST benchmark score 0.916-0.934).
_IMAGE_FIRST: list[dict[str, Any]] = [
    {
        "_blocks": 2,
        "model.channels_0": 32,
        "model.channels_1": 64,
        "model.dropout": 0.25,
        "train.lr": 1e-3,
        "train.weight_decay": 1e-4,
        "train.batch_size": 64,
    }
]
_KIND_FAMILY = {"table": "mlp", "image": "cnn", "sequence": "rnn", "text": "text"}


_FORECAST_TRAIN: dict[str, Any] = {
    **_COMMON_TRAIN,
    "epochs": 60,
    "early_stopping": {"monitor": "val_loss", "patience": 10, "restore_best": True},
}
_FORECAST_SPACE: dict[str, Any] = {
    "train.lr": {"float": [1e-3, 3e-2], "log": True},
    # Up to the penalties ridge regression on lags chooses (alpha ~10 on a few hundred windows: 2 alpha / n).
    "train.weight_decay": {"float": [1e-6, 1e-1], "log": True},
    "train.batch_size": {"choice": [32, 64]},
    "model.normalize": {"choice": ["last", "none"]},
    # L-BFGS fits the linear model to its optimum (ridge regression on the lags); gradient steps only near it.
    "train.optimizer": {"choice": ["adamw", "lbfgs"], "when": {"model.type": ["linear", "mlp"]}},
    "_depth": {"int": [1, 2], "when": {"model.type": "mlp"}},
    "model.hidden": {"per_layer": "_depth", "int": [16, 256], "log": True, "when": {"model.type": "mlp"}},
    "model.dropout": {"float": [0.0, 0.3], "when": {"model.type": "mlp"}},
    "model.hidden_size": {"choice": [16, 32], "when": {"model.type": ["lstm", "gru"]}},
    "train.grad_clip": {"float": [0.5, 5.0], "log": True, "when": {"model.type": ["lstm", "gru"]}},
}
_FORECAST_FAMILIES = {
    "all": ["linear", "mlp", "lstm", "gru"],
    "linear": ["linear"],
    "mlp": ["mlp"],
    "rnn": ["lstm", "gru"],
    "lstm": ["lstm"],
    "gru": ["gru"],
}
_MIN_WINDOWS_PER_LAG = 5  # a window as long as the season only where the series has this many windows' rows


def default_experiment(
    data: dict[str, Any],
    *,
    kind: str,
    model: str | None = None,
    name: str = "tune",
    task: str | None = None,
    season: int = 1,
    n_rows: int | None = None,
) -> dict[str, Any]:
    """An experiment mapping (for `tunelab.spec.parse_spec`) with a search space for this kind of data; a
    table of fewer than ``SMALL_TABLE_ROWS`` rows (``n_rows``) gets the small-data protocol above.

    A series to forecast (``task`` forecasting; ``season``: its seasonal period in rows, ``n_rows``: its
    length) gets :func:`forecast_experiment`'s."""
    if task == "forecasting" and kind == "sequence":
        return forecast_experiment(data, model=model, name=name, season=season, n_rows=n_rows)
    family = model or _KIND_FAMILY[kind]
    if family == "linear":
        raise SpecError("--model linear is for forecasting a series (--task forecasting); use mlp.")
    if family not in MODEL_FAMILIES:
        raise SpecError(
            f"--model '{family}' is not a model family; choose one of {', '.join(MODEL_FAMILIES)}."
        )
    if (family == "text") != (kind == "text"):
        raise SpecError(
            f"--model text needs free text in the data, but this data is a {kind}; use {_KIND_FAMILY[kind]}."
            if family == "text"
            else f"--model {family} cannot read text; this data holds free text: use --model text (or leave "
            "--model out)."
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
    if key == "cnn":
        model_spec["batch_norm"] = True
        search["first_trials"] = _IMAGE_FIRST
    if key == "text":
        search["first_trials"] = _TEXT_FIRST
    train = {**_COMMON_TRAIN, "epochs": _EPOCHS[key]}
    if kind == "table" and key == "mlp" and n_rows is not None and n_rows < SMALL_TABLE_ROWS:
        search = {
            "space": dict(_SMALL_TABLE_SPACE),
            "cv": SMALL_TABLE_FOLDS,
            "first_trials": _SMALL_TABLE_FIRST,
            "scheduler": {"name": "asha", "min_epochs": 10},
        }
        train |= _SMALL_TABLE_TRAIN
    return {"name": name, "data": data, "model": model_spec, "train": train, "search": search}


def forecast_experiment(
    data: dict[str, Any], *, model: str | None, name: str, season: int, n_rows: int | None
) -> dict[str, Any]:
    """The zero-config forecaster: a linear model, an MLP and LSTM / GRU networks on lags (``--model`` keeps
    one family), each reading the last ``model.lags`` steps of the windows (searched: fractions of the window
    and the season), predicting the change from the last value or the level (``model.normalize``).

    The data's windows are as long as the longest lag tried: ``data.window`` as given, else 24 rows, or the
    season where that is longer and the series holds enough rows. The search's first trials (where the family
    allows) are the linear model fitted to its optimum by L-BFGS (ridge regression on every lag) and a
    one-layer MLP predicting changes: strong forecasters that train in seconds, so even a small budget has
    them to beat.
    """
    if model == "cnn":
        raise SpecError("--model cnn needs image data, but this data is a series; use linear, mlp or lstm.")
    types = _FORECAST_FAMILIES[model or "all"]
    window = int(data.get("window", 24))
    if "window" not in data and season > window and (n_rows or 0) >= _MIN_WINDOWS_PER_LAG * season:
        window = season
    lags = sorted(
        {lag for lag in (window // 8, window // 4, window // 2, window, season) if 1 <= lag <= window}
    )
    space: dict[str, Any] = {
        "model.type": {"choice": types} if len(types) > 1 else types[0],
        "model.lags": {"choice": lags} if len(lags) > 1 else lags[0],
    }
    for path, node in _FORECAST_SPACE.items():
        allowed = node.get("when", {}).get("model.type", types)
        allowed = [allowed] if isinstance(allowed, str) else allowed
        if not set(allowed) & set(types):
            continue  # a parameter of a family this search does not try
        space[path] = node if len(types) > 1 else {k: v for k, v in node.items() if k != "when"}
    first = [
        # Fitted to its optimum, the linear model on the levels is ridge regression on the lags (on CO2: test
        # RMSE 0.303 against RidgeCV's 0.302; predicting the change ties its weights to sum to one: 0.322).
        {
            "model.type": "linear",
            "train.optimizer": "lbfgs",
            "model.normalize": "none",
            "train.weight_decay": 1e-4,
            "train.lr": 1e-2,
        },
        {
            "model.type": "mlp",
            "train.optimizer": "adamw",
            "_depth": 1,
            "model.hidden_0": 64,
            "model.dropout": 0.0,
            "train.lr": 1e-2,
        },
    ]
    common = {"model.lags": lags[-1], "model.normalize": "last", "train.weight_decay": 1e-5}
    first = [
        {**common, "train.batch_size": 64, **params}
        for params in first
        if params["model.type"] in types  # the families this search tries
    ]
    for params in first:
        if len(types) == 1:
            params.pop("model.type")
        if len(lags) == 1:
            params.pop("model.lags")
    return {
        "name": name,
        "data": {**data, "window": window},
        "model": {"type": types[0]},
        "train": dict(_FORECAST_TRAIN),
        "search": {
            "space": space,
            "first_trials": first,
            # A forecaster's first epochs say little of its last: stop one only after ten, below the median.
            "scheduler": {"name": "median", "min_epochs": 10},
        },
    }
