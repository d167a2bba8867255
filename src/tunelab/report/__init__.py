"""Reports: console progress and plots."""

from tunelab.report._curves import plot_training_curves
from tunelab.report._progress import EpochPrinter

__all__ = ["EpochPrinter", "plot_training_curves"]
