"""Tune your own PyTorch module with tunelab: a small residual CNN on scikit-learn's handwritten digits.

    python examples/custom_module.py                       # about two minutes on 2 cores
    python examples/custom_module.py --trials 3 --epochs 3 # a quick look

The model is an ordinary ``nn.Module``. tunelab builds it through a factory named by an import string
(``model: {type: custom, factory: "module:function", kwargs: {...}}``) and passes the factory the data's
``input_shape`` (here ``(1, 8, 8)``) and ``output_dim`` (10 classes) when it accepts them. The search varies
the factory's keyword arguments as ``model.kwargs.<name>``, next to the usual training parameters. The winner
is re-evaluated with fresh seeds, refit, tested once and exported to ``OUT/best`` (its ``metadata.json`` names
the factory, so ``tunelab.export.load`` can rebuild it from the weights; TorchScript needs no factory).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.tune import TuneResult, tune_experiment

# `python examples/custom_module.py` puts this folder first on sys.path, so the factory imports as
# `custom_module:make_net` here and in any process started from this folder (loading the export later).
FACTORY = "custom_module:make_net"


class ResidualBlock(nn.Module):
    """``x + conv(relu(bn(conv(x))))``, shape-preserving: ``[N, C, H, W]`` → ``[N, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResidualCNN(nn.Module):
    """A stem convolution, ``n_blocks`` residual blocks, global average pooling, dropout, a linear head.

    Maps images ``[N, C, H, W]`` to logits ``[N, output_dim]``; global pooling makes it independent of H, W.
    """

    def __init__(
        self,
        in_channels: int,
        output_dim: int,
        *,
        channels: int = 16,
        n_blocks: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(n_blocks)))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))


def make_net(
    input_shape: tuple[int, ...],
    output_dim: int,
    *,
    channels: int = 16,
    n_blocks: int = 1,
    dropout: float = 0.1,
) -> nn.Module:
    """The factory tunelab calls: ``input_shape`` is one sample's ``(C, H, W)``."""
    return ResidualCNN(input_shape[0], output_dim, channels=channels, n_blocks=n_blocks, dropout=dropout)


def experiment(*, n_trials: int = 12, epochs: int = 20, budget: str | None = "3m") -> ExperimentSpec:
    """The experiment: digits (20% test, 20% of the rest for validation), the custom model, its search."""
    search: dict[str, Any] = {
        "space": {
            "train.lr": {"float": [1e-3, 3e-2], "log": True},
            "train.weight_decay": {"float": [1e-6, 1e-2], "log": True},
            "model.kwargs.channels": {"choice": [8, 16, 32]},
            "model.kwargs.n_blocks": {"int": [1, 2]},
            "model.kwargs.dropout": {"float": [0.0, 0.4]},
        },
        "metric": "val_accuracy",
        "scheduler": {"name": "asha", "min_epochs": 2, "reduction_factor": 3},
        "n_trials": n_trials,
        "top_k": 2,
        "n_seeds": 2,
    }
    if budget is not None:
        search["budget"] = budget
    return parse_spec(
        {
            "name": "digits-custom-cnn",
            "seed": 0,
            "data": {"source": "digits", "split": {"method": "holdout", "test_fraction": 0.2}},
            "model": {"type": "custom", "factory": FACTORY, "kwargs": {"channels": 16}},
            "train": {
                "optimizer": "adamw",
                "epochs": epochs,
                "batch_size": 64,
                "schedule": {"name": "cosine"},
            },
            "search": search,
        },
        source="examples/custom_module.py",
    )


def main(argv: list[str] | None = None) -> TuneResult:
    parser = argparse.ArgumentParser(description="Tune a custom residual CNN on scikit-learn's digits.")
    parser.add_argument("--trials", type=int, default=12, help="number of trials (default 12)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (default 20)")
    parser.add_argument("--out", type=Path, default=Path("runs/digits-custom-cnn"), help="run directory")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args(argv)
    spec = experiment(n_trials=args.trials, epochs=args.epochs)
    result = tune_experiment(spec, out_dir=args.out, log=None if args.quiet else print)
    summary = result.summary
    print(f"best parameters (trial {summary['best_trial']}): {summary['best_params']}")
    print(f"test accuracy (evaluated once): {summary['test_metrics']['accuracy']:.4f}")
    print(f"exported model: {args.out / 'best'}")
    return result


if __name__ == "__main__":
    main()
