"""The ceiling of the zero-config image prior within a budget: the prior CNN alone, trained for as many
epochs as the budget holds (no search, no refit), on the zero-config split of Fashion-MNIST (48k / 12k) and
the official 10k test images; prints each epoch's elapsed time and validation accuracy, then the test.

    python bench/fmnist_prior_ceiling.py --epochs 36 --seed 0    # about 13.5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from tunelab.data import DataSpec, prepare_data
from tunelab.models import build_model
from tunelab.train import Callback, Trainer, TrainSpec

PRIOR = {"type": "cnn", "channels": [32, 64], "batch_norm": True, "dropout": 0.25, "dense": [128]}


class _Log(Callback):
    def __init__(self, started: float) -> None:
        self.started = started

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        print(epoch, round(time.time() - self.started, 1), round(logs["val_accuracy"], 4), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # as the tunelab command does, before any torch work
    started = time.time()
    bundle = prepare_data(DataSpec(source="fashion-mnist"), seed=args.seed)
    model = build_model(PRIOR, input_shape=bundle.input_shape, output_dim=10, seed=args.seed)
    spec = TrainSpec(
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        batch_size=64,
        epochs=args.epochs,
        seed=args.seed,
        schedule={"name": "cosine"},
        device="cpu",
    )
    trainer = Trainer(model, spec, task="classification", n_classes=10, callbacks=[_Log(started)])
    trainer.fit((bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val))
    test = trainer.evaluate(bundle.X_test, bundle.y_test)
    print(json.dumps({"epochs": args.epochs, "seconds": round(time.time() - started, 1), "test": test}))


if __name__ == "__main__":
    main()
