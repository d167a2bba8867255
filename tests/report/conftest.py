"""Fixtures for the report tests: real run directories (tiny budgets) and a headless Chromium.

The browser speaks the DevTools protocol over a pipe (``--remote-debugging-pipe``: Chromium reads messages on
fd 3 and writes them on fd 4, each a JSON object ended by a NUL byte), so it needs no websocket library and no
browser download; tests that need it skip when ``/usr/bin/chromium`` is absent.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tunelab.report._html import build_report
from tunelab.run import train_experiment
from tunelab.spec import parse_spec
from tunelab.tune import tune_experiment

# --------------------------------------------------------------------------------------------- run folders

_IRIS_TUNE = {
    "name": "iris-tune",
    "seed": 0,
    "data": {"source": "iris"},
    "model": {"type": "mlp", "hidden": [16]},
    "train": {"epochs": 6, "lr": 0.01, "batch_size": 32},
    "search": {
        "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}, "model.dropout": {"float": [0.0, 0.3]}},
        "n_trials": 6,
        "top_k": 2,
        "n_seeds": 2,
        "scheduler": {"name": "asha", "min_epochs": 1},
    },
}
_DIABETES_TUNE = {
    "name": "diabetes-tune",
    "seed": 0,
    "data": {"source": "diabetes", "task": "regression"},
    "model": {"type": "mlp", "hidden": [16]},
    "train": {"epochs": 4, "lr": 0.01, "batch_size": 32},
    "search": {
        "space": {
            "train.lr": {"float": [1e-3, 1e-1], "log": True},
            "train.optimizer": {"choice": ["adam", "sgd"]},
        },
        "n_trials": 5,
        "top_k": 2,
        "n_seeds": 1,
        "cv": 2,
        "scheduler": {"name": "none"},
    },
}
_IRIS_TRAIN = {
    "name": "iris-train",
    "seed": 0,
    "data": {"source": "iris"},
    "model": {"type": "mlp", "hidden": [16]},
    "train": {"epochs": 5, "lr": 0.01, "batch_size": 32},
}


@pytest.fixture(scope="session")
def classification_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tuned iris run: holdout validation, ASHA (so some trials are pruned), 2 candidates re-evaluated."""
    return tune_experiment(parse_spec(_IRIS_TUNE), out_dir=tmp_path_factory.mktemp("runs") / "iris").run_dir


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tuned diabetes run with 2-fold cross-validation inside the search."""
    spec = parse_spec(_DIABETES_TUNE)
    return tune_experiment(spec, out_dir=tmp_path_factory.mktemp("runs") / "diabetes").run_dir


@pytest.fixture(scope="session")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "iris-train"
    train_experiment(parse_spec(_IRIS_TRAIN), out_dir=run_dir)
    return run_dir


@pytest.fixture(scope="session")
def reports(classification_run: Path, regression_run: Path, train_run: Path) -> dict[str, Path]:
    """Each run's report.html, built once for the session."""
    return {
        "classification": build_report(classification_run),
        "regression": build_report(regression_run),
        "train": build_report(train_run),
    }


# ------------------------------------------------------------------------------------------------- browser

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


@dataclass
class PageResult:
    """What a page did while it loaded: JavaScript errors, console errors, and the probes' values."""

    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)


class Browser:
    """One headless Chromium; ``render`` opens a file and reports what happened. Use as a context manager."""

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="tunelab-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def _child_fds() -> None:
            # Move both ends above 10 first, so putting them on 3 and 4 cannot close one with the other.
            read_end = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=_child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):
            self.call("Browser.close")  # a browser that already died needs no closing
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ protocol

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the protocol pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def _wait_event(self, method: str, session: str, deadline: float) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._receive(deadline))

    # -------------------------------------------------------------------------------------------- pages

    def render(
        self,
        path: Path,
        *,
        probes: dict[str, str],
        ready: str = "true",
        screenshot: Path | None = None,
        width: int = 1280,
        height: int = 900,
    ) -> PageResult:
        """Open ``path``; wait for the load event and for the JS expression ``ready`` to be true; then
        evaluate each probe (a JS expression returning JSON) and optionally save a PNG of the viewport."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        deadline = time.monotonic() + self.timeout_s
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self._wait_event("Page.loadEventFired", session, deadline)
        while not self._evaluate(ready, session):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never became ready ({ready})")
            time.sleep(0.1)
        result = PageResult(probes={name: self._evaluate(js, session) for name, js in probes.items()})
        if screenshot is not None:
            shot = self.call("Page.captureScreenshot", {"format": "png"}, session=session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                result.exceptions.append(str(details.get("exception", {}).get("description", details)))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                result.console_errors.append(" ".join(str(a.get("value", a)) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                result.console_errors.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                result.network_requests.append(params["request"]["url"])
        self.call("Target.closeTarget", {"targetId": target})
        return result

    def _evaluate(self, expression: str, session: str) -> Any:
        reply = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"probe failed: {expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium); cannot render the report")
    with Browser() as instance:
        yield instance
