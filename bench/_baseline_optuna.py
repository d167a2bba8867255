"""The strongest plain-Optuna baseline we could write for a 2-core CPU: Fashion-MNIST MLP, no tunelab inside.

What a careful practitioner writes by hand around Optuna:

- **Sampler**: multivariate TPE with ``group=True`` (the per-layer widths are conditional on the depth) and
  ``constant_liar=True`` (running trials count as bad, so the two workers do not propose the same point),
  seeded per worker (``seed + worker``: two TPE copies with one seed would propose identical startup points).
- **Pruner**: ``HyperbandPruner(min_resource=1, max_resource=max_epochs)`` (reduction factor 3), validation
  accuracy reported after every epoch.
- **Training loop**: data as float32 tensors scaled to [0, 1] (pixels / 255), minibatches as index slices of
  a per-epoch ``randperm``, no DataLoader, ``torch.optim`` (Adam, or SGD with Nesterov momentum 0.9),
  weight decay on all parameters (``torch.optim``'s ``weight_decay``), evaluation under ``inference_mode``.
- **Parallelism**: two worker processes on one ``JournalStorage`` (file backend), each with
  ``torch.set_num_threads(1)``: two single-thread trials side by side train more samples per second than one
  two-thread trial on this CPU (docs/FUSED.md).
- **Denormals flushed to zero** (``torch.set_flush_denormal(True)`` first thing in each worker): on this CPU
  arithmetic on denormal floats, which training produces, is many times slower.

The budget is wall time from just before the workers are started, so process start-up, ``import torch``
and reading the data count. Optuna checks ``timeout`` only between trials; the training loop also checks the
deadline every few minibatches and stops a trial still running there (user attribute ``cut_by_budget``;
counted apart from pruned trials), so the search ends at the budget.

Test accuracy: the best trial's own weights (trained on the 50k training rows for its ``max_epochs`` epochs)
are kept on disk when it completes and evaluated once on the official 10k test images. No refit.
"""

from __future__ import annotations

import gzip
import math
import multiprocessing
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from optuna.storages.journal import JournalFileBackend, JournalStorage
from sklearn.model_selection import train_test_split
from torch import nn

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_VALIDATION = 10_000
WIDTHS = (64, 128, 256, 512)
BATCH_SIZES = (64, 128, 256)
OPTIMIZERS = ("adam", "nesterov")
STUDY_NAME = "baseline"
_EVAL_CHUNK = 5_000  # rows per evaluation forward pass: bounds activation memory
_DEADLINE_EVERY = 20  # minibatches between deadline checks (a few ms of training at most)


# ------------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Split:
    """Fashion-MNIST as tensors: pixels float32 ``[N, 784]`` in [0, 1], labels int64 ``[N]``."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def _read_idx(name: str, *, offset: int) -> np.ndarray:
    with gzip.open(FASHION_MNIST / name) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def split_rows(labels: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` positions of the 60k training images: a stratified 50k / 10k holdout.

    The same call tunelab makes for ``split: {method: holdout, val_fraction: 1/6}`` with the same seed, so
    both sides score on the same 10k validation images (``vs_optuna.py`` checks this before it starts).
    """
    train, val = train_test_split(
        np.arange(len(labels)), test_size=N_VALIDATION, shuffle=True, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(val)


def load_split(*, seed: int) -> Split:
    """Read the IDX files and split them (about a second on this machine)."""
    images = _read_idx("train-images-idx3-ubyte.gz", offset=16).reshape(-1, 784)
    labels = _read_idx("train-labels-idx1-ubyte.gz", offset=8)
    test_images = _read_idx("t10k-images-idx3-ubyte.gz", offset=16).reshape(-1, 784)
    test_labels = _read_idx("t10k-labels-idx1-ubyte.gz", offset=8)
    train, val = split_rows(labels, seed=seed)

    def pixels(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.float32) / np.float32(255.0))

    def classes(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.int64))

    return Split(
        pixels(images[train]),
        classes(labels[train]),
        pixels(images[val]),
        classes(labels[val]),
        pixels(test_images),
        classes(test_labels),
    )


# ------------------------------------------------------------------------------------------- model, training


def sample_params(trial: optuna.Trial) -> dict[str, Any]:
    """The issue's search space, in Optuna's define-by-run form."""
    n_layers = trial.suggest_int("n_layers", 1, 3)
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "hidden": [trial.suggest_categorical(f"width_{i}", WIDTHS) for i in range(n_layers)],
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "optimizer": trial.suggest_categorical("optimizer", OPTIMIZERS),
    }


def params_from_trial(params: dict[str, Any]) -> dict[str, Any]:
    """A stored trial's flat Optuna parameters → the ``sample_params`` form (to rebuild its model)."""
    return {
        "lr": params["lr"],
        "weight_decay": params["weight_decay"],
        "hidden": [params[f"width_{i}"] for i in range(params["n_layers"])],
        "dropout": params["dropout"],
        "batch_size": params["batch_size"],
        "optimizer": params["optimizer"],
    }


def build_mlp(hidden: list[int], dropout: float, *, seed: int) -> nn.Sequential:
    """``[Linear(784 → w) → ReLU → Dropout] * len(hidden) → Linear(→ 10)``, PyTorch's default init."""
    layers: list[nn.Module] = []
    width = 784
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Linear(width, 10))
        return nn.Sequential(*layers)


def make_optimizer(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    if params["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    return torch.optim.SGD(
        model.parameters(),
        lr=params["lr"],
        momentum=0.9,
        nesterov=True,
        weight_decay=params["weight_decay"],
    )


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows of ``images`` ``[N, 784]`` whose arg-max logit is the label (``labels`` ``[N]``)."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), _EVAL_CHUNK):
            logits = model(images[start : start + _EVAL_CHUNK])
            correct += int((logits.argmax(dim=1) == labels[start : start + _EVAL_CHUNK]).sum())
    return correct / len(images)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Split,
    *,
    batch_size: int,
    generator: torch.Generator,
    deadline: float,
) -> bool:
    """One pass over the training rows; False if the wall clock passed ``deadline`` before it finished."""
    model.train()
    order = torch.randperm(len(data.X_train), generator=generator)
    for step, start in enumerate(range(0, len(order), batch_size)):
        if step % _DEADLINE_EVERY == 0 and time.time() > deadline:
            return False
        rows = order[start : start + batch_size]
        loss = F.cross_entropy(model(data.X_train[rows]), data.y_train[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return True


class Objective:
    """One trial: train up to ``max_epochs``, report validation accuracy after each, keep a best's weights."""

    def __init__(
        self, data: Split, *, max_epochs: int, deadline: float, weights_dir: Path, seed: int
    ) -> None:
        self.data, self.max_epochs, self.deadline = data, max_epochs, deadline
        self.weights_dir, self.seed = weights_dir, seed

    def __call__(self, trial: optuna.Trial) -> float:
        params = sample_params(trial)
        trial_seed = self.seed + trial.number
        torch.manual_seed(trial_seed)  # dropout masks; this worker process owns its global RNG
        model = build_mlp(params["hidden"], params["dropout"], seed=trial_seed)
        optimizer = make_optimizer(model, params)
        generator = torch.Generator().manual_seed(trial_seed)
        value = math.nan
        for epoch in range(1, self.max_epochs + 1):
            finished = train_epoch(
                model,
                optimizer,
                self.data,
                batch_size=params["batch_size"],
                generator=generator,
                deadline=self.deadline,
            )
            if not finished:  # the budget is spent: stop here rather than overrun it by up to an epoch
                trial.set_user_attr("cut_by_budget", True)
                raise optuna.TrialPruned
            value = accuracy(model, self.data.X_val, self.data.y_val)
            trial.report(value, epoch)
            # After the last epoch the training is done: pruning it then would save nothing.
            if epoch < self.max_epochs and trial.should_prune():
                raise optuna.TrialPruned
        self._keep_if_best(trial, model, value)
        return value

    def _keep_if_best(self, trial: optuna.Trial, model: nn.Module, value: float) -> None:
        # Only a value at least as good as every completed trial's can end up best, so only those are saved:
        # a few files, not one per trial.
        try:
            best = trial.study.best_value
        except ValueError:  # no completed trial yet
            best = -math.inf
        if value >= best:
            path = self.weights_dir / f"trial{trial.number}.pt"
            torch.save(model.state_dict(), path)
            trial.set_user_attr("weights", str(path))


# --------------------------------------------------------------------------------------------------- workers


def _storage(journal: Path) -> optuna.storages.BaseStorage:
    return JournalStorage(JournalFileBackend(str(journal)))


def _worker(worker: int, journal: str, deadline: float, max_epochs: int, seed: int, weights_dir: str) -> None:
    # Denormal floats flushed to zero before any torch work, as tunelab does (tunelab.train.flush_denormals):
    # without it some trials' epochs ran several times slower on this CPU.
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_split(seed=seed)
    with warnings.catch_warnings():  # multivariate / group TPE are "experimental": chosen deliberately
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed + worker, multivariate=True, group=True, constant_liar=True
        )
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    study = optuna.load_study(
        study_name=STUDY_NAME, storage=_storage(Path(journal)), sampler=sampler, pruner=pruner
    )
    objective = Objective(
        data, max_epochs=max_epochs, deadline=deadline, weights_dir=Path(weights_dir), seed=seed
    )
    study.optimize(objective, timeout=max(deadline - time.time(), 0.0), gc_after_trial=False)


def run_baseline(
    budget_s: float, *, work_dir: Path, max_epochs: int = 10, n_workers: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Run the baseline for ``budget_s`` seconds of wall time; return its record (see ``vs_optuna.py``).

    ``started`` in the record is the wall-clock time (``time.time()``) the budget counts from.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work_dir.mkdir(parents=True, exist_ok=True)
    journal = work_dir / "baseline_journal.log"
    journal.unlink(missing_ok=True)
    started = time.time()
    deadline = started + budget_s
    optuna.create_study(study_name=STUDY_NAME, storage=_storage(journal), direction="maximize")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch thread pool inherited
    workers = [
        context.Process(target=_worker, args=(index, str(journal), deadline, max_epochs, seed, str(work_dir)))
        for index in range(n_workers)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    finished = time.time()
    failed = [index for index, process in enumerate(workers) if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"baseline worker(s) {failed} exited with an error; see the traceback above.")
    study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(journal))
    return {
        "started": started,
        "seconds": finished - started,
        "trials": study.get_trials(deepcopy=False),
        "test_accuracy": _test_best(study, seed=seed),
    }


def _test_best(study: optuna.Study, *, seed: int) -> float | None:
    """The best completed trial's kept weights, tested once (None if no trial completed)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    return tested_accuracy(best.params, best.user_attrs["weights"], seed=seed)


def tested_accuracy(flat_params: dict[str, Any], weights: str | Path, *, seed: int) -> float:
    """Test accuracy of a trial's model (its flat Optuna parameters) with the weights saved at ``weights``."""
    params = params_from_trial(flat_params)
    model = build_mlp(params["hidden"], params["dropout"], seed=0)
    model.load_state_dict(torch.load(weights, weights_only=True))
    data = load_split(seed=seed)
    return accuracy(model, data.X_test, data.y_test)
