"""The `tunelab` command line. Thin: it parses, calls the Python API, and formats what comes back.

Every error a user can cause is a :class:`~tunelab.errors.TunelabError`; it is printed as a message (no
traceback) and the process exits with code 2, the conventional code for bad usage.
"""

from __future__ import annotations

from tunelab.cli._app import app, own_process
from tunelab.cli._compress import compress
from tunelab.cli._inspect import dashboard, predict, report, status
from tunelab.cli._train import train
from tunelab.cli._tune import demo, tune, worker

__all__ = ["app", "main"]

# Registered here, in one place, because `tunelab --help` lists the commands in this order.
for _command in (train, demo, dashboard, tune, worker, compress, report, predict, status):
    app.command()(_command)


def main() -> None:
    """Console-script entry point."""
    own_process()
    app()
