"""`tunelab dashboard`: optuna-dashboard served on a run's study, on the loopback interface only.

The served test starts the real blocking `serve_dashboard` in a child process, reads its API over HTTP with
urllib, and stops it with Ctrl-C (SIGINT) as a user would.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import optuna
import pytest
from tests._postgres import free_port

from tunelab.errors import DataError, MissingExtraError, SpecError
from tunelab.report._dashboard import make_dashboard_server, study_storage_url

STUDY = "iris-dash"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with a study.db of three trials: two complete (reported per epoch), one pruned."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    for number, curve in enumerate(([0.5, 0.8], [0.3], [0.6, 0.9])):
        trial = study.ask({"train.lr": lr})
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
        if number == 1:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
    return tmp_path


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_serves_the_run_study_until_ctrl_c(run_dir):
    pytest.importorskip("optuna_dashboard")
    script = textwrap.dedent(
        f"""
        import signal
        from tunelab.report._dashboard import serve_dashboard
        # As in a terminal: a child of a non-interactive shell may start with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        serve_dashboard({str(run_dir)!r}, port={free_port()}, on_ready=lambda url: print(url, flush=True))
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url if url else child.stderr.read()
        summaries = _get(url + "api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == [STUDY]
        detail = _get(url + f"api/studies/{summaries[0]['study_id']}?after=0")
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["state"] for t in trials] == ["Complete", "Pruned", "Complete"]
        assert [t["values"] for t in trials if t["state"] == "Complete"] == [[0.8], [0.9]]
        assert [[(v["step"], v["value"]) for v in t["intermediate_values"]] for t in trials] == [
            [(1, 0.5), (2, 0.8)],
            [(1, 0.3)],
            [(1, 0.6), (2, 0.9)],
        ]
        assert all([p["name"] for p in t["params"]] == ["train.lr"] for t in trials)
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        finally:
            child.kill()
            child.communicate()
    assert child.returncode == -signal.SIGINT  # stopped by the interrupt (an unhandled KeyboardInterrupt)


def test_binds_to_loopback_only(run_dir):
    with pytest.raises(SpecError, match=r"127\.0\.0\.1.*ssh -L"):
        make_dashboard_server(run_dir, host="0.0.0.0")


@pytest.mark.parametrize("port", [-1, 65536, 80.5, True])
def test_rejects_impossible_ports(run_dir, port):
    with pytest.raises(SpecError, match="--port"):
        make_dashboard_server(run_dir, port=port)


def test_a_taken_port_says_choose_another(run_dir):
    pytest.importorskip("optuna_dashboard")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SpecError, match="Choose another --port"):
            make_dashboard_server(run_dir, port=taken.getsockname()[1])


def test_missing_extra_names_the_pip_command(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # `import` now fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'tunelab\[dashboard\]'"):
        make_dashboard_server(run_dir, port=0)


def test_storage_is_the_local_study_db_first(run_dir):
    (run_dir / "summary.json").write_text(json.dumps({"storage": "postgresql://elsewhere/db"}))
    assert study_storage_url(run_dir) == f"sqlite:///{(run_dir / 'study.db').resolve()}"


def test_storage_falls_back_to_the_recorded_url(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"storage": "postgresql://host/db"}))
    assert study_storage_url(tmp_path) == "postgresql://host/db"


def test_a_directory_without_a_study_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no study"):
        study_storage_url(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        study_storage_url(tmp_path / "missing")
