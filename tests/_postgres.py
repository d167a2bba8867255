"""A throwaway PostgreSQL server for the tests of the PostgreSQL study storage (issue #3: ``--storage``
takes any SQLAlchemy URL, and PostgreSQL is how several machines share one study).

The server is real: Debian's ``postgresql`` package (``make test`` installs it when run as root) provides
``initdb`` and ``pg_ctl`` under ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root,
so when the tests run as root (CI, a fresh container) the server runs as the unprivileged ``postgres`` user
the package creates. It listens on a free TCP port of 127.0.0.1 only (no unix socket, so it needs no shared
socket directory), trusts every local connection, keeps its data in a fresh temporary directory, skips
fsync (the data is thrown away), and is stopped and deleted at the end. Tests that need it skip, saying how
to install it, when the binaries are absent (a developer without root).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install -y postgresql"
SUPERUSER = "tunelab"  # the cluster's superuser; trust authentication, so it needs no password
# The server runs as this user when the tests run as root (Debian's package creates it).
UNPRIVILEGED_USER = "postgres"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian's newest version, else the ones on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server on 127.0.0.1:``port``; ``create_database`` makes a fresh database per caller."""

    bin_dir: Path
    root: Path  # temporary directory: data/ and server.log
    port: int = 0
    run_as: str | None = None  # the unprivileged user when the tests run as root
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` here (psycopg 3: the driver of the 'postgres' extra)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, args: Sequence[str], *, timeout: float = 120) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed with exit code {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}\nserver log:\n{log}"
            )

    def start(self) -> None:
        cluster = ["-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust"]
        self._run("initdb", [*cluster, "--locale=C", "--encoding=UTF8", "--no-sync"])
        # A port found free may be taken before the server binds it; try a few.
        for attempt in range(3):
            self.port = free_port()
            try:
                self.resume()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def resume(self) -> None:
        """Start the server of the existing cluster on ``port`` (after :meth:`stop`: an outage's end)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.log_file)
        self._run("pg_ctl", ["start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", log, "-o", options])

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server, cutting connected clients off. "immediate" (the end of the tests: the data is
        thrown away, so no shutdown checkpoint) can lose the last commits, which skip fsync here; "fast"
        writes them first (an outage the data survives, then :meth:`resume`)."""
        self._run("pg_ctl", ["stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir)])

    def create_database(self, prefix: str = "study") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway server (skip when PostgreSQL or psycopg is missing); stop and delete it after."""
    pytest.importorskip("psycopg", reason="the 'postgres' extra is missing: pip install -e '.[dev]'")
    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        pytest.skip(
            f"PostgreSQL's server is not installed ({INSTALL_HINT}); cannot test the PostgreSQL storage"
        )
    run_as = None
    # In the system's temporary directory (world-traversable), not pytest's (mode 0700, owned by root).
    root = Path(tempfile.mkdtemp(prefix="tunelab-postgres-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            shutil.rmtree(root)
            pytest.skip(
                f"PostgreSQL cannot run as root and there is no '{UNPRIVILEGED_USER}' user ({INSTALL_HINT})"
            )
        run_as = UNPRIVILEGED_USER
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir, root, run_as=run_as)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if (server.data_dir / "postmaster.pid").exists():
                server.stop()
        shutil.rmtree(root, ignore_errors=True)
