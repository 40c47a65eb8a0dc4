"""Test-set figures of one classifier: accuracy with its interval, per-class scores, confusion matrix.

Plain NumPy in, JSON-ready Python out (floats, ints, lists), so the results go straight into
``metrics.json``; the scores come from scikit-learn, the interval from :mod:`common.stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.stats import accuracy_with_ci, as_labels


def classification_summary(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy with its 95% interval, per-class precision/recall/F1 and the confusion matrix.

    Args:
        y_true: true class index per image, shape (N,), values in ``range(K)``.
        y_pred: predicted class index per image, shape (N,).
        class_names: the K class names, in index order.

    Returns:
        ``{"test_accuracy", "test_accuracy_ci95": [lo, hi], "per_class": {name: {precision,
        recall, f1, support}}, "confusion_matrix": K x K list (rows = true class)}``.
        Classes absent from the test set keep their row and column (all zeros); a class
        never predicted gets precision 0 rather than a warning (``zero_division=0``).
    """
    # here, not at the top: scikit-learn takes most of a second to import, and the runner imports
    # the evaluate stage with the pipeline, also for a rerun whose evaluate stage is cached
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = as_labels(y_true, y_pred)
    labels = list(range(len(class_names)))
    accuracy, (low, high) = accuracy_with_ci(y_true, y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        str(name): {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(class_names)
    }
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "test_accuracy": accuracy,
        "test_accuracy_ci95": [low, high],
        "per_class": per_class,
        "confusion_matrix": matrix.astype(int).tolist(),
    }
