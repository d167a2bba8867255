"""Zero-config `tunelab tune --budget 60s` on small real tables against scikit-learn's classical models.

Each data set (scikit-learn's breast cancer and wine, loaded as tables) is split once per seed into a training
table and held-back rows (20%, stratified). tunelab tunes on the training table from the command line and
predicts the held-back rows; logistic regression (standardized inputs) and HistGradientBoosting are fitted on
the same training rows, and so are two choices made by 5-fold cross-validation (the better of those two, and
LogisticRegressionCV), which show how often selection itself meets the bar. Prints one line per data set and
seed and a JSON summary.

    .venv/bin/python bench/vs_classical.py --budget 60s --seeds 0 1 2
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
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

LOADERS = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}


def split_table(name: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data set as a table with a named class column, split into training rows and held-back rows."""
    bunch = LOADERS[name](as_frame=True)
    frame = bunch.frame.copy()
    frame["label"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    frame = frame.drop(columns=["target"])
    train, held = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=seed)
    return train.reset_index(drop=True), held.reset_index(drop=True)


def classical(train: pd.DataFrame, held: pd.DataFrame) -> dict[str, float]:
    X, y = train.drop(columns=["label"]), train["label"]
    scores = {}
    for label, model in (
        ("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
        ("hist_gb", HistGradientBoostingClassifier(random_state=0)),
    ):
        model.fit(X, y)
        scores[label] = float((model.predict(held[X.columns]) == held["label"]).mean())
    return scores


def chosen_by_cross_validation(train: pd.DataFrame, held: pd.DataFrame, seed: int) -> dict[str, float]:
    """Held-back accuracy of what a careful scikit-learn user would choose by 5-fold cross-validation on the
    same rows: the better of the two classical models, and logistic regression with its penalty chosen
    (LogisticRegressionCV). The bar "at least both classical models on every seed" holds for these only as
    often as the test rows happen to agree with the training rows' choice."""
    X, y = train.drop(columns=["label"]), train["label"]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    choice = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=5000))]),
        {"model": [LogisticRegression(max_iter=5000), HistGradientBoostingClassifier(random_state=0)]},
        cv=folds,
    )
    penalty = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=20, cv=folds, max_iter=5000))
    scores = {}
    for label, model in (("cv_choice", choice), ("logistic_cv", penalty)):
        model.fit(X, y)
        scores[label] = float((model.predict(held[X.columns]) == held["label"]).mean())
    return scores


def tunelab(
    train: pd.DataFrame, held: pd.DataFrame, budget: str, seed: int, work: Path
) -> tuple[float, float]:
    train_csv, held_csv, out = work / "train.csv", work / "held.csv", work / "run"
    train.to_csv(train_csv, index=False)
    held.drop(columns=["label"]).to_csv(held_csv, index=False)
    exe = Path(sys.executable).parent / "tunelab"
    start = time.perf_counter()
    subprocess.run(
        [
            str(exe),
            "tune",
            "--data",
            str(train_csv),
            "--target",
            "label",
            "--budget",
            budget,
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    preds = work / "preds.csv"
    subprocess.run(
        [str(exe), "predict", str(out), str(held_csv), "--out", str(preds)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ours = float((pd.read_csv(preds)["prediction"].astype(str).to_numpy() == held["label"].to_numpy()).mean())
    return ours, seconds


def main() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn's notices of coming defaults
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", nargs="+", default=list(LOADERS))
    args = parser.parse_args()
    rows = []
    for name in args.data:
        for seed in args.seeds:
            train, held = split_table(name, seed)
            with tempfile.TemporaryDirectory() as tmp:
                ours, seconds = tunelab(train, held, args.budget, seed, Path(tmp))
            row = {
                "data": name,
                "seed": seed,
                "rows_held": len(held),
                "tunelab": ours,
                "seconds": round(seconds, 1),
                **classical(train, held),
                **chosen_by_cross_validation(train, held, seed),
                "load_average": round(os.getloadavg()[0], 2),  # a busy machine shortens the search
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    def at_least_both(side: str) -> int:
        return sum(r[side] >= max(r["logistic"], r["hist_gb"]) for r in rows)

    print(
        json.dumps(
            {"runs": len(rows)}
            | {
                f"at_least_both_{side}": at_least_both(side)
                for side in ("tunelab", "cv_choice", "logistic_cv")
            }
        )
    )


if __name__ == "__main__":
    main()
