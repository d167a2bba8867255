"""Zero-config `tunelab tune --budget 5m` on a real text-classification set against TF-IDF + logistic
regression.

The set is Debian's `fortunes` (quotations filed by topic, `tunelab.data`'s built-in `fortunes`: 8 topics).
Per seed it is split once into a training table and held-back rows (20%, stratified). tunelab tunes on the
training table from the command line and predicts the held-back rows with `tunelab predict`; TF-IDF (word 1-2
grams, sublinear tf) + logistic regression is fitted on the same training rows, with scikit-learn's default
C = 1 and with C chosen by 5-fold cross-validation (LogisticRegressionCV), the baseline a careful practitioner
writes. Prints one line per seed and a JSON summary (medians and ranges over the seeds).

    .venv/bin/python bench/text_vs_tfidf.py --budget 5m --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from tunelab.data import DataSpec, load_dataset


def fortunes_table() -> pd.DataFrame:
    """The built-in fortunes set as a table: `text` and `topic`."""
    dataset = load_dataset(DataSpec(source="fortunes"))
    frame = pd.DataFrame({"text": dataset.features["text"].to_numpy()})
    frame["topic"] = dataset.target
    return frame


def split(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, held = train_test_split(frame, test_size=0.2, stratify=frame["topic"], random_state=seed)
    return train.reset_index(drop=True), held.reset_index(drop=True)


def tfidf_baselines(train: pd.DataFrame, held: pd.DataFrame) -> dict[str, float]:
    """Held-back accuracy of TF-IDF (1-2 grams) + logistic regression, default C and C by 5-fold CV."""
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, classifier in (
            ("tfidf+logreg", LogisticRegression(max_iter=5000)),
            ("tfidf+logregCV", LogisticRegressionCV(Cs=10, cv=5, max_iter=5000)),
        ):
            model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), classifier)
            model.fit(train["text"], train["topic"])
            scores[label] = float((model.predict(held["text"]) == held["topic"]).mean())
    return scores


def tunelab_score(train: pd.DataFrame, held: pd.DataFrame, *, seed: int, budget: str, work: Path) -> dict:
    train.to_csv(work / "train.csv", index=False)
    held[["text"]].to_csv(work / "new.csv", index=False)
    run = work / "run"
    cli = [sys.executable, "-m", "tunelab.cli"]
    started = time.perf_counter()
    tune = [*cli, "tune", "--data", str(work / "train.csv"), "--target", "topic", "--budget", budget]
    subprocess.run([*tune, "--seed", str(seed), "--out", str(run), "--quiet"], check=True)
    wall = time.perf_counter() - started
    predict = [*cli, "predict", str(run), str(work / "new.csv"), "--out", str(work / "preds.csv")]
    subprocess.run(predict, check=True)
    predicted = pd.read_csv(work / "preds.csv", keep_default_na=False)["prediction"].astype(str).to_numpy()
    summary = json.loads((run / "summary.json").read_text())
    winner = (summary.get("best_params") or {}) if isinstance(summary, dict) else {}
    return {
        "accuracy": float((predicted == held["topic"].astype(str).to_numpy()).mean()),
        "wall_s": round(wall, 1),
        "winner": winner,
        "trials": (summary.get("study") or {}).get("n_trials") if isinstance(summary, dict) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/results/text_vs_tfidf.json"))
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    frame = fortunes_table()
    print(f"fortunes: {len(frame)} quotations, {frame['topic'].nunique()} topics", flush=True)
    rows = []
    for seed in args.seeds:
        train, held = split(frame, seed)
        baselines = tfidf_baselines(train, held)
        with tempfile.TemporaryDirectory() as tmp:
            ours = tunelab_score(train, held, seed=seed, budget=args.budget, work=Path(tmp))
        rows.append({"seed": seed, "tunelab": ours["accuracy"], **baselines, "detail": ours})
        print(
            f"seed {seed}: tunelab {ours['accuracy']:.4f} ({ours['wall_s']} s), "
            + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items()),
            flush=True,
        )
    summary = {}
    for key in ("tunelab", "tfidf+logreg", "tfidf+logregCV"):
        values = [row[key] for row in rows]
        summary[key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    result = {"budget": args.budget, "seeds": args.seeds, "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
