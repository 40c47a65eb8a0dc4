"""Statistics of the study's figures (common/stats.py): intervals and paired tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from common.stats import mean_ci, paired_p

# ----------------------------------------------------------------------------- summaries


def test_mean_ci_against_hand_computation():
    values = np.array([0.2, 0.5, np.nan, 0.4, 0.9, np.inf, 0.3])
    finite = np.array([0.2, 0.5, 0.4, 0.9, 0.3])
    half = stats.t.ppf(0.975, 4) * finite.std(ddof=1) / np.sqrt(5)
    mean, low, high = mean_ci(values)
    assert mean == pytest.approx(finite.mean())
    assert low == pytest.approx(finite.mean() - half) and high == pytest.approx(finite.mean() + half)
    assert mean_ci([np.nan, np.inf]) == (None, None, None)
    assert mean_ci([np.nan, 0.7]) == (pytest.approx(0.7), None, None)


def test_paired_p():
    a = np.linspace(1.0, 2.0, 10)
    b = a - 1.0 - np.linspace(0.0, 0.1, 10)  # a > b in every pair
    p = paired_p(a, b)
    assert p is not None and p < 0.05
    assert p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert paired_p([1.0], [0.0]) is None
    assert paired_p([1.0, np.nan, 2.0], [0.0, 1.0, np.nan]) is None  # one finite pair
    assert paired_p(a, a.copy()) is None  # all differences zero
    assert paired_p(a[::-1], a) > 0.05  # no consistent direction
