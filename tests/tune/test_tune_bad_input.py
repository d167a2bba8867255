"""Bad options for `tunelab tune` / `tunelab predict`: exit code 2, a message naming the fix, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()

SPEC = {
    "name": "bad-input",
    "data": {"source": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "train": {"epochs": 2},
    "search": {"space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}}, "n_trials": 2},
}


def run_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def spec_file(tmp_path: Path, **search) -> Path:
    spec = {**SPEC, "search": {**SPEC["search"], **search}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--budget", "ten minutes"], ["budget", "60s", "10m"]),
        (["--budget", "0s"], ["longer than zero"]),
        (["--cv", "1"], ["--cv", "2"]),
        (["--workers", "0"], ["--workers", "1 to 64"]),
        (["--storage", "not a url"], ["--storage", "sqlite:///"]),
        (["--progress", "fancy"], ["fancy", "rich", "json", "quiet"]),
    ],
)
def test_bad_options(tmp_path, args, fragments):
    code, out = run_cli("tune", str(spec_file(tmp_path)), "--out", str(tmp_path / "run"), *args)
    assert code == 2, out
    for fragment in fragments:
        assert fragment in out, (fragment, out)


@pytest.mark.parametrize(
    ("search", "fragments"),
    [
        ({"space": {"train.lr": {"float": [0.1, 0.001]}}}, ["train.lr", "low", "high"]),
        ({"space": {"train.lr": {"float": [0.0, 0.1], "log": True}}}, ["log", "0"]),
        ({"space": {"train.optimizer": {"choice": []}}}, ["train.optimizer", "choice"]),
        ({"space": {"train.lr": {"flaot": [0.001, 0.1]}}}, ["flaot", "float"]),
        ({"sampler": "tpee"}, ["tpee", "tpe"]),
        ({"cv": 1}, ["search.cv", "greater than or equal to 2"]),
        ({"space": {}}, ["nothing to tune"]),
        ({"scheduler": {"name": "pbt"}, "fused": "off"}, ["pbt", "search.fused 'off'", "'auto'"]),
        ({"scheduler": {"name": "pbt"}, "cv": 3}, ["pbt", "search.cv", "holdout"]),
        ({"scheduler": {"name": "pbt"}, "sampler": "grid"}, ["pbt", "grid sampler"]),
        ({"scheduler": {"name": "pbt"}, "population_size": 1}, ["population_size", "at least 2"]),
        ({"scheduler": {"name": "pbt", "perturbation_interval": 1}}, ["perturbation_interval", "2 or more"]),
        ({"scheduler": {"name": "pbt", "quantile_fraction": 0.75}}, ["quantile_fraction", "0.5"]),
        ({"scheduler": {"name": "pbt", "reduction_factor": 4}}, ["reduction_factor", "do not apply", "pbt"]),
        (
            {"scheduler": {"name": "asha", "perturbation_interval": 2}},
            ["perturbation_interval", "only apply"],
        ),
        (
            {"scheduler": {"name": "pbt"}, "space": {"train.batch_size": {"choice": [16, 32]}}},
            ["nothing to perturb", "train.batch_size", "train.lr"],
        ),
    ],
)
def test_bad_search_sections(tmp_path, search, fragments):
    code, out = run_cli("tune", str(spec_file(tmp_path, **search)), "--out", str(tmp_path / "run"))
    assert code == 2, out
    for fragment in fragments:
        assert fragment.lower() in out.lower(), (fragment, out)


@pytest.mark.parametrize(
    ("args", "train", "fragments"),
    [
        (["--workers", "2"], {"epochs": 6}, ["pbt", "--workers 2", "--workers 1"]),
        ([], {"epochs": 2}, ["perturbation_interval", "train.epochs", "4", "2"]),
        (["--cv", "3"], {"epochs": 6}, ["pbt", "search.cv"]),
    ],
)
def test_pbt_with_what_it_cannot_do(tmp_path, args, train, fragments):
    """PBT trains its trials side by side in one process, on one split, with exploit steps before the end."""
    path = tmp_path / "spec.yaml"
    spec = {**SPEC, "train": train, "search": {**SPEC["search"], "scheduler": {"name": "pbt"}}}
    path.write_text(yaml.safe_dump(spec))
    code, out = run_cli("tune", str(path), "--out", str(tmp_path / "run"), *args)
    assert code == 2, out
    for fragment in fragments:
        assert fragment in out, (fragment, out)
    assert not (tmp_path / "run" / "study.db").exists()


def test_spec_without_search_section(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in SPEC.items() if k != "search"}))
    code, out = run_cli("tune", str(path), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "no search section" in out
    assert "tunelab train" in out


def test_neither_spec_nor_data(tmp_path):
    code, out = run_cli("tune", "--out", str(tmp_path / "run"))
    assert code == 2
    assert "--data" in out


def test_resume_of_a_study_that_does_not_exist(tmp_path):
    code, out = run_cli("tune", "--resume", "--out", str(tmp_path / "nothing-here"))
    assert code == 2
    assert "no study to resume" in out


def test_resume_needs_out():
    code, out = run_cli("tune", "--resume")
    assert code == 2
    assert "--out" in out


def test_existing_study_is_kept(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text("kept: true\n")
    (run_dir / "study.db").write_bytes(b"precious")
    code, out = run_cli("tune", str(spec_file(tmp_path)), "--out", str(run_dir))
    assert code == 2
    assert "--resume" in out
    assert (run_dir / "study.db").read_bytes() == b"precious"
    assert (run_dir / "spec.yaml").read_text() == "kept: true\n"


def test_predict_on_a_directory_that_is_not_a_run(tmp_path):
    new_rows = tmp_path / "rows.csv"
    new_rows.write_text("a,b\n1,2\n")
    code, out = run_cli("predict", str(tmp_path), str(new_rows), "--out", str(tmp_path / "p.csv"))
    assert code == 2
    assert "export" in out.lower() or "run" in out.lower()


def test_predict_with_a_missing_data_file(tmp_path):
    code, out = run_cli("predict", str(tmp_path), str(tmp_path / "nope.csv"))
    assert code == 2
    assert "nope.csv" in out


def test_zero_config_wrong_target_lists_columns(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("height,weight,label\n1,2,a\n3,4,b\n" * 20)
    code, out = run_cli("tune", "--data", str(csv), "--target", "lable", "--out", str(tmp_path / "run"))
    assert code == 2
    assert "lable" in out
    assert "label" in out


def test_zero_config_invalid_task_is_a_message():
    """A value pydantic rejects (its ValidationError, not a TunelabError) is a message and exit code 2 too."""
    code, out = run_cli("tune", "--data", "iris", "--task", "nonsense")
    assert code == 2
    assert "task: Input should be" in out
    assert "(got 'nonsense')" in out
