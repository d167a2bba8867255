"""`tunelab compress` end to end on small tuned runs: the front, the screen, the pick's rules, the exports
that reload in a fresh process, and bad input (exit 2, the run directory unchanged)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.compress import compress_run
from tunelab.data import prepare_data
from tunelab.errors import MissingExtraError
from tunelab.export import load
from tunelab.spec import CompressSpec, load_spec

runner = CliRunner()


def run_cli(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def _tune(root: Path, spec: dict) -> Path:
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, output = run_cli("tune", root / "spec.yaml", "--out", root / "run", "-q")
    assert code == 0, output
    return root / "run"


def _fingerprint(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


SMALL = {"widths": [1.0, 0.5], "sparsities": [0.0, 0.5], "max_epochs": 2, "batches": [1, 64]}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP tuned on scikit-learn's digits (8x8 images), two trials."""
    return _tune(
        tmp_path_factory.mktemp("compress-digits"),
        {
            "name": "digits-mlp",
            "data": {"source": "digits"},
            "model": {"type": "mlp", "hidden": [96, 48]},
            "train": {"epochs": 8, "batch_size": 64},
            "search": {
                "space": {"train.lr": {"float": [3e-3, 1e-2], "log": True}},
                "n_trials": 2,
                "top_k": 1,
                "n_seeds": 1,
            },
        },
    )


@pytest.fixture(scope="module")
def compressed(tuned: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    run = tmp_path_factory.mktemp("compress-out") / "run"
    shutil.copytree(tuned, run)
    lines: list[str] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = compress_run(run, CompressSpec(budget="25s", max_drop=2.0, **SMALL), log=lines.append)
    assert result.pick == (run / "compressed" if result.record["pick"]["trial"] is not None else None)
    return run, result.record, lines


def test_the_front_is_non_dominated_and_the_pick_obeys_its_rules(compressed) -> None:
    run, record, _lines = compressed
    front = record["front"]
    assert front, "the search completed no candidate"
    key = "64"

    def dominates(a: dict, b: dict) -> bool:
        no_worse = (
            a["val_score"] >= b["val_score"]
            and a["latency_ms"][key] <= b["latency_ms"][key]
            and a["deflated_bytes"] <= b["deflated_bytes"]
        )
        better = (
            a["val_score"] > b["val_score"]
            or a["latency_ms"][key] < b["latency_ms"][key]
            or a["deflated_bytes"] < b["deflated_bytes"]
        )
        return no_worse and better

    for a in front:
        assert not any(dominates(b, a) for b in front if b is not a)
    pick = record["pick"]
    original = record["original"]
    if pick["trial"] is None:
        assert "winner stays" in pick["reason"]
        return
    chosen = next(e for e in front if e["trial"] == pick["trial"])
    assert chosen["val_score"] >= record["reference"]["value"] - record["allowed_drop"]
    for batch in ("1", "64"):  # never slower than the fp32 original, at any measured batch
        assert chosen["latency_ms"][batch] <= original["latency_ms"][batch]
    # The run's delivered model was also trained on the test rows (search.refit: all, the default): the
    # compression's test scores say they are not held out.
    assert set(pick["test"]) == {"accuracy", "original", "note"}
    assert pick["test"]["note"].startswith("not held out")
    assert (run / "compression.json").exists()
    assert json.loads((run / "compression.json").read_text())["pick"]["trial"] == pick["trial"]


def test_screened_candidates_are_pruned_trials_of_the_stored_study(compressed) -> None:
    run, record, _lines = compressed
    study = optuna.load_study(study_name="compress", storage=f"sqlite:///{run / 'compression' / 'study.db'}")
    screened = [t for t in study.trials if "screened_by" in t.user_attrs]
    assert len(screened) == record["candidates"]["screened"]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in screened)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == record["candidates"]["trained"]
    assert all(len(t.values) == 3 for t in complete)  # score, latency, size


def test_every_exported_model_reloads_in_a_fresh_process_and_agrees(compressed, tmp_path) -> None:
    """Each front model's export, loaded by a new Python process, scores the validation rows exactly as the
    search measured it in process (>= 99.9% of its predictions agree with the in-process load)."""
    run, record, _lines = compressed
    spec = load_spec(run / "spec.yaml")
    bundle = prepare_data(spec.data, seed=spec.seed)
    images = bundle.X_val.numpy()
    labels = bundle.y_val.numpy()
    np.savez(tmp_path / "val.npz", X=images)
    exports = [run / "compression" / "front" / str(e["trial"]) for e in record["front"]]
    if record["pick"]["trial"] is not None:
        exports.append(run / "compressed")
    script = (  # the validation rows are already preprocessed: they go to the model itself
        "import sys, json, numpy as np, torch, tunelab\n"
        "x = torch.from_numpy(np.load(sys.argv[1])['X'])\n"
        "with torch.no_grad():\n"
        "    print(json.dumps([tunelab.load(p).module(x).argmax(1).tolist() for p in sys.argv[2:]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "val.npz"), *map(str, exports)],
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(done.stdout)
    scores = {e["trial"]: e["val_score"] for e in record["front"]}
    for path, ids in zip(exports, fresh, strict=True):
        with torch.no_grad():
            in_process = load(path).module(torch.from_numpy(images)).argmax(1).numpy()
        assert (np.asarray(ids) == in_process).mean() >= 0.999
        trial = json.loads((path / "metadata.json").read_text())["compression"]["trial"]
        assert (np.asarray(ids) == labels).mean() == pytest.approx(scores[trial], abs=1e-3)


def test_tunelab_predict_runs_the_compressed_model(compressed, tmp_path) -> None:
    """`tunelab predict` runs the pick (or, when the machine's timing left none qualifying, a front model:
    every front model is exported alike)."""
    run, record, _lines = compressed
    target = run / "compressed"
    if record["pick"]["trial"] is None:
        target = run / "compression" / "front" / str(record["front"][0]["trial"])
    spec = load_spec(run / "spec.yaml")
    bundle = prepare_data(spec.data, seed=spec.seed)
    np.savez(tmp_path / "new.npz", X=bundle.X_test.numpy()[:50])
    code, output = run_cli("predict", target, tmp_path / "new.npz", "--out", tmp_path / "p.csv")
    assert code == 0, output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 51


def test_the_command_prints_the_front_and_the_pick(tuned, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tuned, run)
    code, output = run_cli(
        "compress", run, "--budget", "8s", "--batch", "1,32", "--max-drop", "3", "--prefer", "size", "-q"
    )
    assert code == 0, output
    assert "compression front" in output
    assert "pick:" in output
    record = json.loads((run / "compression.json").read_text())
    assert record["settings"]["prefer"] == "size"
    assert record["settings"]["batches"] == [1, 32]


# ------------------------------------------------------------------------------------------ bad input


def test_a_directory_without_a_tuned_run_is_a_message(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    code, output = run_cli("compress", tmp_path / "x", "--budget", "5s")
    assert code == 2
    assert "holds no finished tune run" in output
    assert "tunelab tune" in output
    assert list((tmp_path / "x").iterdir()) == []


def test_a_run_whose_export_is_gone_is_a_message_and_stays_as_it_was(tuned, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tuned, run)
    shutil.rmtree(run / "best")
    before = _fingerprint(run)
    code, output = run_cli("compress", run, "--budget", "5s")
    assert code == 2
    assert "export" in output
    assert _fingerprint(run) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-drop", "99"], "any constant model meets"),
        (["--max-drop", "-1"], "max_drop"),
        (["--batch", "1,x"], "not a list of batch sizes"),
        (["--prefer", "speed"], "prefer"),
        (["--budget", "soon"], "not a duration"),
    ],
)
def test_impossible_options_are_a_message_and_change_nothing(tuned, tmp_path, args, fragment) -> None:
    run = tmp_path / "run"
    shutil.copytree(tuned, run)
    before = _fingerprint(run)
    code, output = run_cli("compress", run, *args)
    assert code == 2, output
    assert fragment in output
    assert _fingerprint(run) == before


def test_without_onnxruntime_the_message_names_the_extra(tuned, tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(tuned, run)
    before = _fingerprint(run)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match="onnx"):
        compress_run(run, CompressSpec(budget="5s"))
    code, output = run_cli("compress", run, "--budget", "5s")
    assert code == 2
    assert "tunelab[onnx]" in output.replace("'", "").replace('"', "")
    assert _fingerprint(run) == before


def test_a_regression_run_compresses_on_its_own_metric(tmp_path) -> None:
    """A metric other than accuracy: rmse (minimized), its max drop a percent of the winner's value."""
    run = _tune(
        tmp_path,
        {
            "name": "diabetes-mlp",
            "data": {"source": "diabetes"},
            "model": {"type": "mlp", "hidden": [32]},
            "train": {"epochs": 6, "batch_size": 32},
            "search": {
                "space": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
                "n_trials": 2,
                "top_k": 1,
                "n_seeds": 1,
                "metric": "val_rmse",
            },
        },
    )
    result = compress_run(run, CompressSpec(budget="10s", max_drop=5.0, **SMALL))
    record = result.record
    assert record["metric"] == "rmse"
    assert record["direction"] == "minimize"
    assert record["allowed_drop"] == pytest.approx(0.05 * record["reference"]["value"])
    assert record["front"]
    if record["pick"]["trial"] is not None:
        pick = next(e for e in record["front"] if e["trial"] == record["pick"]["trial"])
        assert pick["val_score"] <= record["reference"]["value"] + record["allowed_drop"]
        predictions = load(run / "compressed").predict(_diabetes_rows())
        assert np.isfinite(predictions).all()


def _diabetes_rows():
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame.head(20)


def test_a_specs_compress_section_compresses_the_winner_after_tuning(tmp_path) -> None:
    """`tunelab tune` with `compress:` writes compressed/ and compression.json, and the report shows the
    front; `tunelab train` and `tunelab tune` refuse train.distill (they have no teacher)."""
    run = _tune(
        tmp_path,
        {
            "name": "digits-compressed",
            "data": {"source": "digits"},
            "model": {"type": "mlp", "hidden": [64]},
            "train": {"epochs": 5, "batch_size": 64},
            "search": {
                "space": {"train.lr": {"float": [3e-3, 1e-2]}},
                "n_trials": 1,
                "top_k": 1,
                "n_seeds": 1,
            },
            "compress": {"budget": "8s", "max_drop": 3.0, **SMALL},
        },
    )
    record = json.loads((run / "compression.json").read_text())
    assert record["front"]
    report = (run / "report.html").read_text()
    assert 'id="plot-compression"' in report
    assert 'id="plot-compression-macs"' in report
    assert all(entry["macs"] > 0 for entry in record["all"])


def test_a_spec_that_distills_without_a_teacher_is_refused(tmp_path) -> None:
    spec = {"data": {"source": "digits"}, "train": {"distill": {"temperature": 2.0}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, output = run_cli("train", tmp_path / "spec.yaml", "--out", tmp_path / "run")
    assert code == 2
    assert "tunelab compress" in output
