"""Accuracy interval, per-class summary and the exact McNemar test on hand-checked examples."""

from __future__ import annotations

import numpy as np
import pytest

from common.classification import classification_summary
from common.stats import accuracy_with_ci, mcnemar_exact


def test_accuracy_ci_all_correct():
    # Clopper–Pearson with k = n = 10: upper 1, lower = 0.025 ** (1/10) = 0.69150...
    acc, (lo, hi) = accuracy_with_ci(np.arange(10), np.arange(10))
    assert acc == 1.0
    assert hi == 1.0
    assert lo == pytest.approx(0.6915029, abs=1e-6)


def test_accuracy_ci_none_correct_and_half():
    acc, (lo, hi) = accuracy_with_ci([0] * 10, [1] * 10)
    assert acc == 0.0 and lo == 0.0
    assert hi == pytest.approx(1 - 0.025**0.1, abs=1e-6)  # 0.30849...
    # 5 of 10: the textbook exact interval [0.187, 0.813]
    acc, (lo, hi) = accuracy_with_ci([0] * 10, [0] * 5 + [1] * 5)
    assert acc == 0.5
    assert lo == pytest.approx(0.187086, abs=1e-5)
    assert hi == pytest.approx(0.812914, abs=1e-5)


def test_accuracy_rejects_bad_input():
    with pytest.raises(ValueError):
        accuracy_with_ci([], [])
    with pytest.raises(ValueError):
        accuracy_with_ci([0, 1], [0])


def test_classification_summary_hand_made():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 0, 2]
    s = classification_summary(y_true, y_pred, ["cat", "dog", "eel", "fox"])
    assert s["test_accuracy"] == pytest.approx(4 / 6)
    assert isinstance(s["test_accuracy_ci95"], list) and len(s["test_accuracy_ci95"]) == 2
    lo, hi = s["test_accuracy_ci95"]
    assert lo < 4 / 6 < hi
    cat, dog, eel, fox = (s["per_class"][c] for c in ("cat", "dog", "eel", "fox"))
    # cat: predicted 3 times (2 right), 3 true -> P 2/3, R 2/3
    assert cat == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    # dog: predicted twice (1 right), 2 true -> P 1/2, R 1/2
    assert dog == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert eel == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    # fox never occurs nor is predicted: zeros, no warning, still a row in the matrix
    assert fox == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert s["confusion_matrix"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert all(type(v) is int for row in s["confusion_matrix"] for v in row)


def test_mcnemar_exact_hand_made():
    # 1 image only A gets right, 9 only B, 5 both, 2 neither
    y = np.zeros(17, dtype=int)
    a = np.array([0] * 1 + [1] * 9 + [0] * 5 + [1] * 2)
    b = np.array([1] * 1 + [0] * 9 + [0] * 5 + [2] * 2)
    r = mcnemar_exact(y, a, b)
    assert r["mcnemar_p"] == pytest.approx(0.021484375, abs=1e-12)  # 2 * (1 + 10) / 2**10
    assert (r["only_a_correct"], r["only_b_correct"], r["both_correct"], r["both_wrong"], r["n"]) == (1, 9, 5, 2, 17)


def test_mcnemar_symmetric_and_no_discordance():
    y = np.array([0, 1, 2, 0])
    assert mcnemar_exact(y, y, y)["mcnemar_p"] == 1.0
    assert mcnemar_exact(y, [1, 1, 2, 1], [1, 1, 2, 1])["mcnemar_p"] == 1.0
    # 2 vs 2 discordant -> p = 1 exactly (never above 1)
    r = mcnemar_exact([0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0])
    assert r["mcnemar_p"] == 1.0
