"""How a bag of embeddings pools, on fortunes' topics, beside TF-IDF + logistic regression on the same rows.

Per seed the fortunes set is split as `bench/text_vs_tfidf.py` splits it (20% held back, stratified); the
other 80% goes through `prepare_data` as `tunelab tune` would (its own test part of 20%, validation of 20% of
the rest, the tokenizer fitted on the training part). Each pooling trains a `TextModel` (bag encoder,
embeddings of 128, dropout 0.3, AdamW 1e-2, weight decay 1e-4, batch 32, one thread) on the training part,
keeps the epoch of best validation accuracy (at most 30), and scores the held-back rows; then trains the same
recipe (those epochs) on every row tunelab was given, as `search.refit: all` does, and scores them again.
TF-IDF (word 1-2 grams, sublinear tf) + logistic regression with C by 5-fold CV is fitted on the same
training part, and on every row. Prints a line per seed and pooling and a JSON summary (medians and ranges).

The refit part runs tunelab's own pipeline on the same rows: the zero-config first trial (weighted bag)
trained by the `Evaluator` as a search trial would be (cosine schedule over 30 epochs, early stopping on the
validation loss), then trained again on every row for its best epoch count two ways: with the schedule
squeezed into those epochs (the refit before 2026-12-07), and replaying the validated run's schedule (30
epochs' horizon) stopped at that epoch (`fit_final` now).

    .venv/bin/python bench/text_pooling.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from text_vs_tfidf import fortunes_table, split

from tunelab.data import DataSpec, load_dataset, prepare_data
from tunelab.models import TextModel
from tunelab.models._specs import TextSpec

POOLINGS = ["mean", "mean_max", "weighted"]


def train(model: TextModel, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, val=None):
    """AdamW over shuffled batches of 32; with ``val`` (X, y) the state of the best validation epoch is
    kept. Returns (best validation accuracy, its epoch)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    best, best_epoch, state = -1.0, epochs, None
    for epoch in range(1, epochs + 1):
        model.train()
        for rows in torch.randperm(len(x)).split(32):
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if val is not None:
            accuracy = score(model, *val)
            if accuracy > best:
                best, best_epoch = accuracy, epoch
                state = {k: v.clone() for k, v in model.state_dict().items()}
    if state is not None:
        model.load_state_dict(state)
    return best, best_epoch


@torch.no_grad()
def score(model: TextModel, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def tfidf_cv(texts: pd.Series, labels: pd.Series, held: pd.DataFrame) -> float:
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegressionCV(Cs=10, cv=5, max_iter=5000),
    )
    model.fit(texts, labels)
    return float((model.predict(held["text"]) == held["topic"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/results/text_pooling.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    frame = fortunes_table()
    rows = []
    for seed in args.seeds:
        given, held = split(frame, seed)
        work = tempfile.TemporaryDirectory()
        path = Path(work.name) / "given.csv"
        given.to_csv(path, index=False)  # the table tunelab is given, read by every part below
        data = DataSpec(source=str(path), target="topic")
        dataset = load_dataset(data)
        bundle = prepare_data(data, seed=seed, dataset=dataset)
        X_held = bundle.preprocessor.transform(held[["text"]])
        y_held = bundle.preprocessor.transform_target(held["topic"].to_numpy())
        X_all = torch.cat([bundle.X_train, bundle.X_val, bundle.X_test])
        y_all = torch.cat([bundle.y_train, bundle.y_val, bundle.y_test])
        assert bundle.text is not None
        part = _training_part(given, dataset, data, seed)
        assert len(part) == len(bundle.X_train)
        row = {
            "seed": seed,
            "tfidf_cv_training_part": tfidf_cv(part["text"], part["topic"], held),
            "tfidf_cv_every_row": tfidf_cv(given["text"], given["topic"], held),
        }
        for pooling in POOLINGS:
            started = time.perf_counter()
            spec = TextSpec(encoder="bag", embedding_dim=128, pooling=pooling, dropout=0.3)
            torch.manual_seed(seed)
            model = TextModel(spec, text=bundle.text, output_dim=bundle.n_classes)
            val, epochs = train(
                model, bundle.X_train, bundle.y_train, epochs=30, seed=seed, val=(bundle.X_val, bundle.y_val)
            )
            held_part = score(model, X_held, y_held)
            torch.manual_seed(seed)
            model = TextModel(spec, text=bundle.text, output_dim=bundle.n_classes)
            train(model, X_all, y_all, epochs=epochs, seed=seed)
            held_all = score(model, X_held, y_held)
            row[pooling] = {
                "validation": val,
                "epochs": epochs,
                "held_training_part": held_part,
                "held_every_row": held_all,
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(
                f"seed {seed} {pooling:9s} val {val:.4f} ({epochs} epochs); held back: "
                f"trained on the training part {held_part:.4f}, on every row {held_all:.4f}",
                flush=True,
            )
        print(
            f"seed {seed} TF-IDF + LR (C by CV): training part {row['tfidf_cv_training_part']:.4f}, "
            "every row "
            f"{row['tfidf_cv_every_row']:.4f}",
            flush=True,
        )
        row["refit"] = refit_part(path, held, seed, n_rows=len(given))
        work.cleanup()
        print(
            f"seed {seed} refit of the first trial ({row['refit']['epochs']} epochs) on every row: schedule "
            f"squeezed {row['refit']['squeezed']:.4f}, replayed {row['refit']['replayed']:.4f}",
            flush=True,
        )
        rows.append(row)
    summary: dict[str, dict[str, float]] = {}
    keys = [(p, k) for p in POOLINGS for k in ("held_training_part", "held_every_row")]
    for pooling, key in keys:
        values = [row[pooling][key] for row in rows]
        summary[f"{pooling} {key}"] = _spread(values)
    for key in ("tfidf_cv_training_part", "tfidf_cv_every_row"):
        summary[key] = _spread([row[key] for row in rows])
    for key in ("squeezed", "replayed"):
        summary[f"refit {key}"] = _spread([row["refit"][key] for row in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "rows": rows, "summary": summary}, indent=2))
    print(json.dumps(summary, indent=2))


def refit_part(path: Path, held: pd.DataFrame, seed: int, *, n_rows: int) -> dict[str, float]:
    """The first trial's search run on the table at ``path``, then its refit on every row with the schedule
    squeezed and replayed."""
    from tunelab.execute import Evaluator, trial_spec
    from tunelab.spec import parse_spec
    from tunelab.tune import default_experiment
    from tunelab.tune._select import fit_final

    raw = default_experiment({"source": str(path), "target": "topic"}, kind="text", n_rows=n_rows)
    raw["train"]["seed"] = seed
    spec = parse_spec(raw)
    assert spec.search is not None
    params = spec.search.search_space().overrides_from_params(spec.search.first_trials[0])
    evaluator = Evaluator(spec, spec.data)
    bundle = evaluator.bundle(None)
    x_held = bundle.preprocessor.transform(held[["text"]])
    y_held = bundle.preprocessor.transform_target(held["topic"].to_numpy())
    run = evaluator.run(trial_spec(spec, params), None, "val_accuracy")
    epochs = run.best_epoch
    replayed = fit_final(spec, params, evaluator, epochs=epochs, every_row=True)
    squeezed_spec = trial_spec(spec, params)
    squeezed_train = squeezed_spec.train.model_copy(update={"epochs": epochs, "early_stopping": None})
    squeezed = evaluator.trainer(squeezed_spec.model_copy(update={"train": squeezed_train}), bundle)
    squeezed.fit(
        (
            torch.cat([bundle.X_train, bundle.X_val, bundle.X_test]),
            torch.cat([bundle.y_train, bundle.y_val, bundle.y_test]),
        )
    )

    def held_accuracy(trainer) -> float:
        return float((trainer.outputs(x_held).argmax(1) == y_held).float().mean())

    return {
        "epochs": epochs,
        "search_run": held_accuracy(run.trainer),
        "squeezed": held_accuracy(squeezed),
        "replayed": held_accuracy(replayed),
    }


def _training_part(given: pd.DataFrame, dataset, data: DataSpec, seed: int) -> pd.DataFrame:
    """The rows of ``given`` that ``prepare_data`` puts in the training part (the split it makes)."""
    from tunelab.data._splits import split_indices

    indices = split_indices(
        dataset.n_rows, data.split, seed=seed, fold=None, labels=dataset.target, has_test_part=False
    )
    return given.iloc[np.asarray(indices.train)]


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


if __name__ == "__main__":
    main()
