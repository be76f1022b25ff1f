"""Classification metrics (per class, confusion, top-k), calibration and open-set scores."""

from .calibration import (
    calibration_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from .classification import (
    basic_metrics,
    classification_report,
    confusion_matrix,
    most_confused,
    top_k_accuracy,
)
from .openset import rejection_report, unknown_scores

__all__ = [
    "basic_metrics",
    "calibration_temperature",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_temperature",
    "most_confused",
    "negative_log_likelihood",
    "rejection_report",
    "reliability_bins",
    "top_k_accuracy",
    "unknown_scores",
]
