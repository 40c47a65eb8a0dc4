"""Statistics of the study's figures: intervals and paired tests, from SciPy.

- accuracy: an exact Clopper-Pearson interval (:func:`accuracy_with_ci`) and an exact McNemar
  test of two classifiers on the same images (:func:`mcnemar_exact`);
- a mean over images or seeds with its two-sided 95% Student-t interval (:func:`mean_ci`,
  :func:`estimate`);
- paired tests: Wilcoxon signed-rank over images (:func:`paired_p`), Student's t over seeds
  (:func:`paired_t_p`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.results import Estimate


def _scipy_stats():
    """``scipy.stats``, imported when a statistic is first computed: it takes half a second, and the
    runner imports this module with the pipeline, also for a rerun whose evaluate stage is cached."""
    from scipy import stats

    return stats


def as_labels(*arrays: Any) -> list[np.ndarray]:
    """The arrays as 1-D integer arrays of one common, non-zero length.

    Raises:
        ValueError: when they are empty or differ in length.
    """
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
    y_true, y_pred = as_labels(y_true, y_pred)
    correct = int(np.sum(y_true == y_pred))
    ci = _scipy_stats().binomtest(correct, y_true.size).proportion_ci(confidence_level=confidence, method="exact")
    return correct / y_true.size, (float(ci.low), float(ci.high))


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
    y_true, pred_a, pred_b = as_labels(y_true, pred_a, pred_b)
    a_right = pred_a == y_true
    b_right = pred_b == y_true
    only_a = int(np.sum(a_right & ~b_right))
    only_b = int(np.sum(~a_right & b_right))
    discordant = only_a + only_b
    p = (
        1.0
        if discordant == 0
        else float(_scipy_stats().binomtest(only_a, discordant, 0.5, alternative="two-sided").pvalue)
    )
    return {
        "mcnemar_p": min(p, 1.0),
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "both_correct": int(np.sum(a_right & b_right)),
        "both_wrong": int(np.sum(~a_right & ~b_right)),
        "n": int(y_true.size),
    }


def mean_ci(values: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Mean and two-sided 95% Student-t confidence interval of the finite values.

    Args:
        values: any shape; NaN and infinite values are left out.

    Returns:
        ``(mean, low, high)``; ``(None, None, None)`` with no finite value, ``(mean, None,
        None)`` with one.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None, None, None
    mean = float(x.mean())
    if x.size == 1:
        return mean, None, None
    half = float(_scipy_stats().t.ppf(0.975, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def estimate(values: np.ndarray) -> Estimate:
    """:func:`mean_ci` as an :class:`~common.results.Estimate`, with the count of finite values."""
    mean, low, high = mean_ci(values)
    return Estimate(mean=mean, ci95=[low, high], n=int(np.isfinite(np.asarray(values, np.float64)).sum()))


def paired_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``) of paired values.

    Args:
        a, b: ``(N,)`` paired per image; pairs where either is not finite are left out.

    Returns:
        The p-value; None with fewer than two pairs or when every difference is zero.

    Raises:
        ValueError: when ``a`` and ``b`` differ in shape.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.size} and {b.size}")
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    if a.size < 2 or np.all(a == b):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and tie notes from SciPy
        return float(_scipy_stats().wilcoxon(a, b).pvalue)


def paired_t_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided paired Student's t-test p-value (``scipy.stats.ttest_rel``), e.g. two models'
    accuracies paired by training seed; None with fewer than two pairs or when every
    difference is the same (the test is undefined)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or np.ptp(a - b) == 0:
        return None
    return float(_scipy_stats().ttest_rel(a, b).pvalue)


def signed_rank_p(values: np.ndarray, reference: float = 0.0) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``values - reference`` (one value per image):
    is their median different from ``reference``? Non-finite values are left out; None with
    fewer than two values or when every value equals the reference."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)] - reference
    if x.size < 2 or np.all(x == 0):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and tie notes from SciPy
        return float(_scipy_stats().wilcoxon(x).pvalue)


def smallest_signed_rank_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test on ``n`` pairs can give:
    every difference on one side, 2 / 2**n (SciPy computes it exactly up to 50 pairs without ties)."""
    return 1.0 if n < 1 else min(1.0, 2.0 / 2.0**n)


def images_needed(family_size: int, alpha: float = 0.05) -> int:
    """The fewest images at which a two-sided Wilcoxon signed-rank test can be significant at
    ``alpha`` after Holm's correction in a family of ``family_size`` tests (its smallest p-value
    is multiplied by the family's size). Below it, no verdict is possible, whatever the data."""
    n = 1
    while smallest_signed_rank_p(n) * max(1, family_size) >= alpha:
        n += 1
    return n


def holm(p_values: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment of a family of p-values (``statsmodels.stats.multitest
    .multipletests``, method "holm"), by name; a missing p-value (None: no test could be made)
    stays None and is not counted in the family."""
    from statsmodels.stats.multitest import multipletests

    names = [name for name, p in p_values.items() if p is not None]
    adjusted: dict[str, float | None] = dict.fromkeys(p_values)
    if names:
        _, corrected, _, _ = multipletests([p_values[n] for n in names], method="holm")
        adjusted.update({name: float(p) for name, p in zip(names, corrected, strict=True)})
    return adjusted
