"""tunelab's exception hierarchy.

Every error a user can cause is a :class:`TunelabError`. Its message says what happened, what was expected and
how to fix it; the CLI prints it and exits with code 2, without a traceback.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "MissingExtraError",
    "PerformanceWarning",
    "SpecError",
    "TrainingError",
    "TunelabError",
]


class TunelabError(Exception):
    """Base class of every error tunelab raises for a user's input or environment."""


class SpecError(TunelabError, ValueError):
    """The experiment spec, a search space or a command-line option is malformed or impossible."""


class DataError(TunelabError, ValueError):
    """A data source is missing, unreadable, or does not fit the task (a missing target column...)."""


class TrainingError(TunelabError, RuntimeError):
    """Training cannot go on: the model diverged (loss not finite), or a user's model failed."""


class MissingExtraError(TunelabError, ImportError):
    """An optional part was asked for but its extra is not installed; the message names the pip command."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the optional extra '{extra}', which is not installed. "
            f"Install it with: pip install 'tunelab[{extra}]'"
        )
        self.extra = extra


class PerformanceWarning(UserWarning):
    """Something about the environment will make training slower than it could be; the message says how to
    avoid it."""
