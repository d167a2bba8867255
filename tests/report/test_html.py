"""The HTML report: which plots each kind of run gets, a self-contained page, the header's facts."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.errors import DataError
from tunelab.report._html import PLOT_IDS, build_report

STUDY_PLOTS = {"plot-history", "plot-curves", "plot-timeline", "plot-parallel", "plot-slice"}
EXPECTED = {
    "classification": STUDY_PLOTS | {"plot-importance", "plot-candidates", "plot-confusion", "plot-training"},
    "regression": STUDY_PLOTS
    | {"plot-importance", "plot-candidates", "plot-parity", "plot-residuals", "plot-training"},
    "train": {"plot-confusion", "plot-training"},
}


def plot_ids(page: str) -> set[str]:
    """The ids of the plotly figures on the page (the divs plotly draws into)."""
    return set(re.findall(r'<div id="(plot-[a-z-]+)" class="plotly-graph-div"', page))


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_report_holds_exactly_the_plots_of_its_kind(reports: dict[str, Path], kind: str) -> None:
    page = reports[kind].read_text(encoding="utf-8")
    assert plot_ids(page) == EXPECTED[kind]
    assert reports[kind].name == "report.html"
    assert set(EXPECTED[kind]) <= set(PLOT_IDS.values())
    # one drawing script per plot, each addressing its own div
    assert page.count("Plotly.newPlot(") == len(EXPECTED[kind])


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_classifier_report_has_a_per_class_table_under_its_confusion_matrix(
    reports: dict[str, Path], kind: str
) -> None:
    page = reports[kind].read_text(encoding="utf-8")
    confusion = "plot-confusion" in EXPECTED[kind]
    assert ("<th>precision</th>" in page) == confusion
    assert ("macro average" in page) == confusion


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_plotly_js_is_inlined_once_and_nothing_is_fetched(reports: dict[str, Path], kind: str) -> None:
    page = reports[kind].read_text(encoding="utf-8")
    bundle = get_plotlyjs()
    assert page.count(bundle[:2000]) == 1
    assert page.count(bundle[-2000:]) == 1
    assert "<script src" not in page.replace(" ", "")
    assert "<link" not in page
    assert "@import" not in page


def test_tuned_header_shows_best_configuration_test_score_and_protocol(
    reports: dict[str, Path], classification_run: Path
) -> None:
    summary = json.loads((classification_run / "summary.json").read_text())
    page = reports["classification"].read_text(encoding="utf-8")
    header = page[page.index('id="sec-summary"') : page.index('id="sec-history"')]
    assert f"{summary['test_metrics']['accuracy']:.4g}" in header
    assert f"<td>train.lr</td><td>{summary['best_params']['train']['lr']:.4g}</td>" in header
    for step in summary["protocol"].values():
        assert html.escape(str(step)) in header
    assert f"{summary['trials']['pruned']} pruned" in header
    # search.refit: all (the default): the delivered model then trained on every row; the card says whose
    # score the test is
    assert summary["trained_on_test"] is True
    assert "the recipe, before its fit on every row" in header


def test_candidates_table_lists_every_candidate_with_its_interval(
    reports: dict[str, Path], classification_run: Path
) -> None:
    summary = json.loads((classification_run / "summary.json").read_text())
    page = reports["classification"].read_text(encoding="utf-8")
    section = page[page.index('id="sec-candidates"') :]
    for cand in summary["candidates"]:
        assert f"<td>trial {cand['trial']}</td>" in section
        low, high = cand["ci95"]
        assert f"[{low:.4g}, {high:.4g}]" in section  # n_seeds=2 on holdout: two runs, a finite interval


def test_cross_validated_curves_mark_the_fold_boundaries(reports: dict[str, Path]) -> None:
    page = reports["regression"].read_text(encoding="utf-8")
    assert "epoch (folds one after another)" in page


def test_train_report_shows_validation_and_test_metrics(reports: dict[str, Path], train_run: Path) -> None:
    metrics = json.loads((train_run / "metrics.json").read_text())
    page = reports["train"].read_text(encoding="utf-8")
    val, test = metrics["val"]["accuracy"], metrics["test"]["accuracy"]
    assert f"<td>accuracy</td><td>{val:.4g}</td><td>{test:.4g}</td>" in page


def test_text_from_the_run_is_escaped(train_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(train_run, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["name"] = "<script>alert(1)</script>"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_path_can_be_chosen(train_run: Path, tmp_path: Path) -> None:
    out = build_report(train_run, path=tmp_path / "elsewhere.html")
    assert out == tmp_path / "elsewhere.html"
    assert plot_ids(out.read_text(encoding="utf-8")) == EXPECTED["train"]


def test_a_train_run_without_predictions_has_no_prediction_plots(train_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(train_run, run_dir)
    (run_dir / "test_predictions.csv").unlink()
    assert plot_ids(build_report(run_dir).read_text(encoding="utf-8")) == {"plot-training"}


def test_multi_objective_study_gets_a_pareto_front(classification_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir, ignore=shutil.ignore_patterns("study.db", "report.html"))
    study = optuna.create_study(
        study_name="iris-tune",
        storage=f"sqlite:///{run_dir / 'study.db'}",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_metric_names(["val_accuracy", "latency_ms"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=8)
    page = build_report(run_dir).read_text(encoding="utf-8")
    ids = plot_ids(page)
    assert "plot-pareto" in ids
    assert {"plot-history", "plot-parallel", "plot-slice"} <= ids  # drawn for the first objective
    assert "plot-curves" not in ids  # nothing was reported per epoch


@pytest.mark.parametrize("missing", ["no-such-dir", "empty-dir"])
def test_a_folder_without_a_finished_run_is_a_data_error(tmp_path: Path, missing: str) -> None:
    run_dir = tmp_path / missing
    if missing == "empty-dir":
        run_dir.mkdir()
    with pytest.raises(DataError, match=r"summary\.json"):
        build_report(run_dir)


def _moved_study(classification_run: Path, tmp_path: Path, recorded: str) -> tuple[Path, str]:
    """A copy of the tuned run whose study.db lives elsewhere, its summary recording ``recorded`` as the
    storage; returns the run directory and the URL of the moved study."""
    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir, ignore=shutil.ignore_patterns("study.db", "report.html"))
    (tmp_path / "db").mkdir()
    shutil.copy(classification_run / "study.db", tmp_path / "db" / "study.db")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["storage"] = recorded
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir, f"sqlite:///{tmp_path / 'db' / 'study.db'}"


def test_a_hidden_password_asks_for_the_storage_and_storage_opens_the_study(
    classification_run: Path, tmp_path: Path
) -> None:
    """summary.json keeps a --storage URL with its password hidden: the report cannot log in with it, so it
    says to pass --storage, and reads the study from the URL given there."""
    hidden = "postgresql+psycopg://someone:***@127.0.0.1:1/studies"
    run_dir, url = _moved_study(classification_run, tmp_path, hidden)
    with pytest.raises(DataError, match=r"password hidden") as caught:
        build_report(run_dir)
    assert hidden in str(caught.value)
    assert "--storage URL" in str(caught.value)
    page = build_report(run_dir, storage=url).read_text(encoding="utf-8")
    assert plot_ids(page) == EXPECTED["classification"]

    runner = CliRunner()
    (run_dir / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"tunelab report {run_dir} --storage URL" in " ".join(result.output.split())
    assert not (run_dir / "report.html").exists()
    result = runner.invoke(app, ["report", str(run_dir), "--storage", url])
    assert result.exit_code == 0, result.output
    assert plot_ids((run_dir / "report.html").read_text(encoding="utf-8")) == EXPECTED["classification"]


def test_a_storage_without_the_study_is_a_data_error(classification_run: Path, tmp_path: Path) -> None:
    run_dir, _ = _moved_study(classification_run, tmp_path, "sqlite:////nowhere/study.db")
    other = tmp_path / "other.db"
    optuna.create_study(study_name="another-study", storage=f"sqlite:///{other}")
    with pytest.raises(DataError, match=r"holds no study named 'iris-tune'"):
        build_report(run_dir, storage=f"sqlite:///{other}")
