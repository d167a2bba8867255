"""Serve optuna-dashboard on a run's study: ``tunelab dashboard RUN_DIR``.

The study storage is an ordinary Optuna database (see :mod:`tunelab.storage`), so the dashboard reads it
as it is, also while the study runs. optuna-dashboard is an optional extra (``pip install
'tunelab[dashboard]'``), imported only here and only when a dashboard is asked for.

The server binds to the loopback interface only: the dashboard has no authentication and lets whoever reaches
it edit notes and delete studies, so it must not be reachable from other machines. To share it, tunnel the
port (``ssh -L 8080:127.0.0.1:8080 host``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tunelab.errors import DataError, MissingExtraError, SpecError
from tunelab.layout import RunLayout
from tunelab.storage import connect_storage, run_study_url

__all__ = ["LOOPBACK_HOSTS", "make_dashboard_server", "serve_dashboard", "study_storage_url"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def study_storage_url(run_dir: str | Path, *, storage: str | None = None) -> str:
    """The storage URL of the study in ``run_dir``: ``storage`` when given, else its ``study.db`` (also while
    the study is running), else the storage a finished run recorded in ``summary.json`` (``--storage
    postgresql://...``), which must not be one whose password was hidden when it was recorded."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(
            f"'{run_dir}' is not a directory. Expected the run directory of `tunelab tune` (its --out)."
        )
    url = run_study_url(RunLayout(run_dir), storage, command="tunelab dashboard")
    if url is None:
        raise DataError(
            f"'{run_dir}' holds no study (no study.db, and no storage recorded). Expected the run directory "
            "of `tunelab tune`; a `tunelab train` run has no study to show."
        )
    return url


class _QuietHandler(WSGIRequestHandler):
    """wsgiref logs every request to stderr; the dashboard polls several times a second."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _DashboardServer(WSGIServer):
    """wsgiref's server that also closes the study's database connections when it is closed."""

    on_close: Callable[[], None] | None = None

    def server_close(self) -> None:
        super().server_close()
        if self.on_close is not None:
            self.on_close()


def make_dashboard_server(
    run_dir: str | Path, *, port: int = 8080, host: str = "127.0.0.1", storage: str | None = None
) -> WSGIServer:
    """A WSGI server for optuna-dashboard on ``run_dir``'s study (or on ``storage``, the study's full URL),
    bound but not yet serving.

    ``port=0`` picks a free port (read it back from ``server.server_port``). Call ``serve_forever()`` to
    serve and ``shutdown()`` (from another thread) then ``server_close()`` to stop.
    """
    if host not in LOOPBACK_HOSTS:
        raise SpecError(
            f"the dashboard binds to this machine only (one of {', '.join(LOOPBACK_HOSTS)}); got host "
            f"{host!r}. It has no login, so anyone who reaches it can edit or delete studies. To open it "
            "from another machine, forward the port: ssh -L 8080:127.0.0.1:8080 THIS_HOST."
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SpecError(f"--port must be a whole number from 1 to 65535 (0: any free port); got {port!r}.")
    url = study_storage_url(run_dir, storage=storage)
    try:
        import optuna_dashboard
    except ImportError:
        raise MissingExtraError("`tunelab dashboard` (optuna-dashboard)", "dashboard") from None
    import optuna

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise DataError(f"the study file {url.removeprefix('sqlite:///')} does not exist or is not a file.")
    # A database that cannot be opened is a clear error naming the URL (password hidden) and what to check.
    database = connect_storage(url)
    opened = optuna.storages.get_storage(database)
    app = optuna_dashboard.wsgi(opened)
    try:
        # One request at a time, as optuna-dashboard's own server does: its caches assume it, and wsgiref
        # closes every connection after its response, so a slow browser cannot hold the others up for long.
        server = make_server(host, port, app, server_class=_DashboardServer, handler_class=_QuietHandler)
    except OSError as err:
        database.engine.dispose()
        raise SpecError(
            f"cannot listen on {host}:{port}: {err.strerror or err}. Choose another --port "
            "(the port is taken, or below 1024 without privileges)."
        ) from None
    server.on_close = database.engine.dispose
    return server


def serve_dashboard(
    run_dir: str | Path,
    *,
    port: int = 8080,
    host: str = "127.0.0.1",
    on_ready: Callable[[str], None] | None = None,
    storage: str | None = None,
) -> None:
    """Serve optuna-dashboard on ``run_dir``'s study at ``http://host:port/`` until Ctrl-C.

    ``on_ready(url)`` is called once the server listens (the CLI prints the address there); ``storage``: the
    study's full URL when it is not the run's ``study.db``.
    """
    server = make_dashboard_server(run_dir, port=port, host=host, storage=storage)
    # Serve on a worker thread and wait on this one: Ctrl-C then always reaches this thread. Served here, it
    # would often land inside a request, where wsgiref's handler catches every exception and serves on.
    worker = threading.Thread(target=server.serve_forever, name="tunelab-dashboard", daemon=True)
    worker.start()
    try:
        if on_ready is not None:
            on_ready(f"http://{host}:{server.server_port}/")
        worker.join()
    finally:
        server.shutdown()
        server.server_close()
