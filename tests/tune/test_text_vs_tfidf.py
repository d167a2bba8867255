"""Issue #18, must show 1: on a topic-classification set built from Debian's fortunes (8 topics, split by a
fixed seed), zero-config `tunelab tune --budget 5m` then `tunelab predict` on the held-back rows scores at
least TF-IDF (word 1-2 grams, sublinear tf) + logistic regression fitted on the same rows, with
scikit-learn's default C and with C chosen by 5-fold cross-validation. bench/text_vs_tfidf.py prints the
comparison over three seeds (BENCHMARKS.md, "Text (#18)")."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data import DataSpec, load_dataset

FORTUNES = Path("/usr/share/games/fortunes")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not FORTUNES.is_dir(), reason="needs Debian's fortunes (apt-get install fortunes)")
def test_a_5_minute_text_study_scores_at_least_tfidf_and_logistic_regression(tmp_path):
    dataset = load_dataset(DataSpec(source="fortunes"))
    frame = pd.DataFrame({"text": dataset.features["text"].to_numpy(), "topic": dataset.target})
    assert frame["topic"].nunique() >= 6
    train, held = train_test_split(frame, test_size=0.2, stratify=frame["topic"], random_state=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    held[["text"]].to_csv(tmp_path / "new.csv", index=False)
    runner = CliRunner()
    run = tmp_path / "run"
    for args in (
        ["tune", "--data", str(tmp_path / "train.csv"), "--target", "topic", "--budget", "5m", "--seed", "0",
         "--out", str(run), "--quiet"],
        ["predict", str(run), str(tmp_path / "new.csv"), "--out", str(tmp_path / "preds.csv")],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "preds.csv")["prediction"].astype(str).to_numpy()
    ours = float((predicted == held["topic"].astype(str).to_numpy()).mean())
    theirs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, classifier in (
            ("C = 1", LogisticRegression(max_iter=5000)),
            ("C by 5-fold CV", LogisticRegressionCV(Cs=10, cv=5, max_iter=5000)),
        ):
            baseline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), classifier)
            baseline.fit(train["text"], train["topic"])
            theirs[name] = float((baseline.predict(held["text"]) == held["topic"]).mean())
    print(f"fortunes: tunelab {ours:.4f}, TF-IDF + logistic regression {theirs}")
    assert all(ours >= score for score in theirs.values()), (ours, theirs)
