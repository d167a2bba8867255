"""Reports: console progress, plots, and the self-contained HTML report of a run."""

from tunelab.report._curves import plot_training_curves
from tunelab.report._html import PLOT_IDS, build_report
from tunelab.report._live import PROGRESS_MODES, TuneProgress, make_progress
from tunelab.report._progress import EpochPrinter

__all__ = [
    "PLOT_IDS",
    "PROGRESS_MODES",
    "EpochPrinter",
    "TuneProgress",
    "build_report",
    "make_progress",
    "plot_training_curves",
]
