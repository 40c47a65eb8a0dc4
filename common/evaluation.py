"""Test-set evaluation of one model and the paired comparison of two.

Plain NumPy in, JSON-ready Python out (floats, ints, lists), so the results go
straight into ``metrics.json``. The statistics come from SciPy and scikit-learn:
an exact Clopper–Pearson interval for accuracy and an exact McNemar test (a two-sided
binomial test on the discordant pairs) for "do the two models differ?".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def _labels(*arrays: Any) -> list[np.ndarray]:
    """1-D integer arrays of one common, non-zero length."""
    out = [np.asarray(a).ravel() for a in arrays]
    n = out[0].size
    if n == 0:
        raise ValueError("no predictions to evaluate")
    if any(a.size != n for a in out):
        raise ValueError(f"label arrays differ in length: {[a.size for a in out]}")
    return out


def accuracy_with_ci(y_true: Any, y_pred: Any, confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Accuracy and its exact (Clopper–Pearson) confidence interval.

    Args:
        y_true: true class per image, shape (N,).
        y_pred: predicted class per image, shape (N,).
        confidence: coverage of the interval.

    Returns:
        ``(accuracy, (low, high))``.

    Raises:
        ValueError: when the arrays are empty or differ in length.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    correct = int(np.sum(y_true == y_pred))
    ci = binomtest(correct, y_true.size).proportion_ci(confidence_level=confidence, method="exact")
    return float(accuracy_score(y_true, y_pred)), (float(ci.low), float(ci.high))


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
    y_true, y_pred = _labels(y_true, y_pred)
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


def mcnemar_exact(y_true: Any, pred_a: Any, pred_b: Any) -> dict[str, Any]:
    """Exact McNemar test of two classifiers on the same test images.

    Only the discordant pairs carry information: under "equal accuracy" an image that
    exactly one model gets right is equally likely to be A's or B's, so the count of
    "only A correct" is Binomial(discordant, 0.5) and the two-sided exact p-value comes
    from ``scipy.stats.binomtest``.

    Args:
        y_true: true class per image, shape (N,).
        pred_a: model A's predicted class per image, shape (N,).
        pred_b: model B's predicted class per image, shape (N,).

    Returns:
        ``{"mcnemar_p", "only_a_correct", "only_b_correct", "both_correct", "both_wrong",
        "n"}``; ``mcnemar_p`` is 1.0 when no image is discordant.
    """
    y_true, pred_a, pred_b = _labels(y_true, pred_a, pred_b)
    a_right = pred_a == y_true
    b_right = pred_b == y_true
    only_a = int(np.sum(a_right & ~b_right))
    only_b = int(np.sum(~a_right & b_right))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5, alternative="two-sided").pvalue)
    return {
        "mcnemar_p": min(p, 1.0),
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "both_correct": int(np.sum(a_right & b_right)),
        "both_wrong": int(np.sum(~a_right & ~b_right)),
        "n": int(y_true.size),
    }
