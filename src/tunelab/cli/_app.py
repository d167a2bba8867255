"""The Typer app, its consoles, and what every command shares: turning a user's error into a message.

Nothing heavy is imported here or at the top of the command modules: ``tunelab --help`` and a mistyped
option must answer at once, and torch, scikit-learn and Optuna take seconds to import. Each command imports
what it needs when it runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeGuard

import typer
from rich.console import Console
from rich.markup import escape

from tunelab.errors import TunelabError

if TYPE_CHECKING:
    from pydantic import ValidationError

app = typer.Typer(
    name="tunelab",
    help="Train, tune, validate and export deep-learning models, faster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
out_console = Console()

EXIT_USER_ERROR = 2

# Set by main(): the process is the `tunelab` command, so its floating-point mode is ours to set. A program
# that calls `app` itself (the tests do) keeps its own.
_owns_process = False


def own_process() -> None:
    """Declare this process the `tunelab` command: its commands flush denormals before their torch work."""
    global _owns_process
    _owns_process = True


def before_torch() -> None:
    """Called first by every command: in the `tunelab` process, flush denormal floats to zero before any torch
    work, so that torch's worker threads inherit the mode (see :func:`tunelab.train.flush_denormals`). Here
    rather than in main() because it imports torch, which ``--help`` and a bad option must not."""
    if _owns_process:
        from tunelab.train import flush_denormals

        flush_denormals()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user's error into a clear message and exit code 2; never a traceback."""
    try:
        yield
    except TunelabError as err:
        # The message is text, not markup: `pip install 'tunelab[onnx]'` must keep its brackets.
        err_console.print(
            f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True, soft_wrap=True
        )
        raise typer.Exit(EXIT_USER_ERROR) from None
    except Exception as err:
        if not _is_validation_error(err):
            raise
        from tunelab.spec import format_validation_error

        err_console.print(
            f"[bold red]error:[/] {escape(format_validation_error(err, source='the input'))}", highlight=False
        )
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        err_console.print("interrupted; files written so far are kept.")
        raise typer.Exit(130) from None


def _is_validation_error(err: Exception) -> TypeGuard[ValidationError]:
    """Whether ``err`` is pydantic's ValidationError, without importing pydantic for the commands that never
    do: only an imported pydantic can have raised one."""
    if "pydantic" not in sys.modules:
        return False
    from pydantic import ValidationError

    return isinstance(err, ValidationError)


def fmt(value: Any) -> str:
    """A metric for a summary table: four decimals, or '-' where there is none."""
    return f"{value:.4f}" if isinstance(value, int | float) else "-"
