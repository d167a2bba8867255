"""`tunelab status`: a study as it is now, read from its storage (issue #17): trials by state, the running
ones, retries and the artifact store; a run directory or --storage / --study; bad input exits 2."""

from __future__ import annotations

import io

import optuna
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.storage import DatabaseArtifactStore

runner = CliRunner()


def _study(url: str, name: str = "s") -> None:
    """Three complete trials (best 0.9), a pruned and a failed one, a retry of the failed one still running
    with two epochs reported, and a waiting one."""
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for value in (0.5, 0.9, 0.7):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.1}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    study.enqueue_trial({}, user_attrs={"retry_of": 4})
    retry = study.ask()
    retry.report(0.3, 1)
    retry.report(0.4, 2)
    study.enqueue_trial({})
    storage.engine.dispose()


def test_status_of_a_storage_and_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url)
    store = DatabaseArtifactStore(url)
    store.write("ckpt-5", io.BytesIO(b"x" * 1500))
    store.close()
    result = runner.invoke(app, ["status", "--storage", url, "--study", "s"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"study s at {url} (maximize)"
    assert lines[1] == "trials: 7 (1 running, 3 complete, 1 pruned, 1 fail, 1 waiting)"
    assert lines[2] == "best: trial 1, value 0.9"
    assert lines[3].startswith("running: trial 5 since ")
    assert lines[3].endswith("2 epoch(s) reported, retry of trial 4")
    assert lines[4] == "retries (1, new <- interrupted): 5 <- 4"
    assert lines[5] == "artifacts: 1 in the database, 1,500 bytes"


def test_status_of_a_run_directory_finds_its_study(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").write_text(yaml.safe_dump({"name": "mine"}))
    _study(f"sqlite:///{run / 'study.db'}", name="mine")
    _study(f"sqlite:///{run / 'study.db'}", name="other")  # several studies: the spec names the run's
    result = runner.invoke(app, ["status", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("study mine at sqlite:///")
    assert "artifacts: none stored in this database" in result.output


def test_status_bad_input_exits_2_with_a_message(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url, name="a")
    _study(url, name="b")
    cases = [
        (["status"], "nothing to show"),
        (["status", "--storage", url], "holds 2 studies (a, b); name one with --study NAME"),
        (["status", "--storage", url, "--study", "c"], "holds no study named 'c' (it holds: a, b)"),
        (["status", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"], "no study database at"),
        (["status", str(tmp_path / "empty")], "holds no study"),
    ]
    (tmp_path / "empty").mkdir()
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "missing.db").exists()  # nothing created
