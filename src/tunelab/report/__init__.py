"""Reports: console progress, plots, and the self-contained HTML report of a run."""

from tunelab.report._curves import plot_training_curves
from tunelab.report._dashboard import make_dashboard_server, serve_dashboard, study_storage_url
from tunelab.report._html import PLOT_IDS, build_report
from tunelab.report._live import PROGRESS_MODES, TuneProgress, make_progress
from tunelab.report._progress import EpochPrinter
from tunelab.report._tensorboard import (
    TensorBoardLogger,
    require_tensorboard,
    write_run_to_tensorboard,
    write_study_to_tensorboard,
)

__all__ = [
    "PLOT_IDS",
    "PROGRESS_MODES",
    "EpochPrinter",
    "TensorBoardLogger",
    "TuneProgress",
    "build_report",
    "make_dashboard_server",
    "make_progress",
    "plot_training_curves",
    "require_tensorboard",
    "serve_dashboard",
    "study_storage_url",
    "write_run_to_tensorboard",
    "write_study_to_tensorboard",
]
