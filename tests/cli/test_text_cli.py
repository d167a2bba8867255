"""Text from the command line: `tunelab tune --data reviews.csv` finds the text column, tunes text models and
exports one whose tokenizer travels with it (JSON, no pickle); `tunelab predict` in a fresh process reads raw
text (a table, a .txt file, a folder of .txt files) and predicts what the model did in process; bad text input
is a message and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests._text import topic_texts
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.export import load

runner = CliRunner()


def run_cli(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    """A text classifier tuned zero-config on a CSV of reviews (two trials)."""
    root = tmp_path_factory.mktemp("text")
    topic_texts(240).to_csv(root / "reviews.csv", index=False)
    code, out = run_cli(
        "tune", "--data", root / "reviews.csv", "--target", "label", "--trials", "2", "--seed", "0",
        "--out", root / "run", "--quiet",
    )  # fmt: skip
    assert code == 0, out
    return root / "run"


def test_the_exported_text_model_predicts_raw_text_in_a_fresh_process(tuned: Path, tmp_path: Path):
    new = topic_texts(40, seed=7)
    new[["review"]].to_csv(tmp_path / "new.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "predict", str(tuned), str(tmp_path / "new.csv"), "--out",
         str(tmp_path / "p.csv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    fresh = pd.read_csv(tmp_path / "p.csv")
    model = load(tuned / "best")
    here = model.predict_frame(new[["review"]])
    assert (fresh["prediction"].to_numpy() == here["prediction"].to_numpy()).all()
    probabilities = [column for column in here.columns if column.startswith("proba_")]
    np.testing.assert_allclose(fresh[probabilities].to_numpy(), here[probabilities].to_numpy(), atol=1e-6)
    # it learned the topics: the words say which one
    assert float((here["prediction"].to_numpy() == new["label"].to_numpy()).mean()) >= 0.9
    # a list of strings works too, and ONNX computes the same
    assert list(model.predict(list(new["review"][:5]))) == list(here["prediction"][:5])
    if (tuned / "best" / "model.onnx").exists():
        onnx = load(tuned / "best", backend="onnx")
        agree = (onnx.predict(new[["review"]]) == here["prediction"].to_numpy()).mean()
        assert agree >= 0.999


def test_the_export_carries_the_tokenizer_as_json_and_no_pickle(tuned: Path):
    best = tuned / "best"
    state = json.loads((best / "preprocessor.json").read_text())
    text = json.dumps(state)
    assert '"type": "text"' in text
    assert "review" in state["features"]["text_columns"]
    assert json.loads(state["features"]["tokenizer_json"])["model"]["vocab"]  # the tokenizer, as JSON
    with np.load(best / "preprocessor.npz", allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)
    metadata = json.loads((best / "metadata.json").read_text())
    assert metadata["kind"] == "text"
    assert metadata["model_spec"]["type"] == "text"
    assert not list(best.glob("*.pkl"))


def test_predict_reads_a_txt_file_and_a_folder_of_them(tuned: Path, tmp_path: Path):
    lines = ["the judge and the jury heard the appeal", "bake the bread with butter and salt"]
    (tmp_path / "new.txt").write_text("\n".join(lines) + "\n\n")
    code, out = run_cli("predict", tuned, tmp_path / "new.txt", "--out", tmp_path / "a.csv")
    assert code == 0, out
    assert list(pd.read_csv(tmp_path / "a.csv")["prediction"]) == ["law", "food"]
    (tmp_path / "docs" / "x").mkdir(parents=True)
    for index, line in enumerate(lines):
        (tmp_path / "docs" / "x" / f"{index}.txt").write_text(line)
    code, out = run_cli("predict", tuned, tmp_path / "docs", "--out", tmp_path / "b.csv")
    assert code == 0, out
    predicted = pd.read_csv(tmp_path / "b.csv")
    assert list(predicted["path"]) == ["x/0.txt", "x/1.txt"]
    assert list(predicted["prediction"]) == ["law", "food"]


def test_predict_on_text_that_is_not_utf8_is_a_message(tuned: Path, tmp_path: Path):
    (tmp_path / "new.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    code, out = run_cli("predict", tuned, tmp_path / "new.txt", "--out", tmp_path / "a.csv")
    assert code == 2
    assert "not UTF-8" in out
    assert not (tmp_path / "a.csv").exists()


@pytest.mark.parametrize(
    ("make", "extra", "fragments"),
    [
        ("empty", [], ["no usable feature columns"]),
        ("latin1", [], ["not valid utf-8", "encoding"]),
        ("text_target", ["--target", "review"], ["holds free text", "not labels"]),
        ("folder_latin1", [], ["encoding"]),
        ("mlp", ["--model", "mlp"], ["cannot read text", "--model text"]),
    ],
)
def test_bad_text_input_is_a_message_and_exit_2(tmp_path: Path, make, extra, fragments):
    frame = topic_texts(60)
    source = tmp_path / "t.csv"
    if make == "empty":
        frame["review"] = ""
        frame.to_csv(source, index=False)
    elif make == "latin1":
        frame.loc[0, "review"] = "café crème and bread"
        frame.to_csv(source, index=False, encoding="latin-1")
    elif make.startswith("folder"):
        source = tmp_path / "docs"
        for topic in ("a", "b"):
            (source / topic).mkdir(parents=True)
            (source / topic / "1.txt").write_text("fine text here")
        (source / "a" / "2.txt").write_bytes("caf\xe9".encode("latin-1"))
    else:
        frame.to_csv(source, index=False)
    target = [] if make.startswith("folder") or "--target" in extra else ["--target", "label"]
    code, out = run_cli("tune", "--data", source, *target, *extra, "--trials", "1", "--out", tmp_path / "run")
    assert code == 2, out
    for fragment in fragments:
        assert fragment.lower() in out.lower()
    assert not (tmp_path / "run").exists()
