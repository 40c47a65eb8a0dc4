"""The model-randomisation check's weights (common/quality/randomisation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from common.quality.agreement import rank_correlation
from common.quality.randomisation import randomize_weights

# ----------------------------------------------------------------------------- model randomisation


def _weights():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(0.3, 2.0, size=(64, 16, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=(64,)).astype(np.float64),
        "bn.weight": np.ones(8, dtype=np.float32),  # zero std
        "bn.num_batches_tracked": np.array(12, dtype=np.int64),
    }


def test_randomize_weights_rule():
    w = _weights()
    before = {k: v.copy() for k, v in w.items()}
    r = randomize_weights(w, seed=3)
    for k in w:
        np.testing.assert_array_equal(w[k], before[k])  # the input is left as it was
    assert list(r) == list(w)
    assert all(r[k].shape == w[k].shape and r[k].dtype == w[k].dtype for k in w)
    for k, v in randomize_weights(w, seed=3).items():
        np.testing.assert_array_equal(v, r[k])  # deterministic per seed
    other = randomize_weights(w, seed=4)
    assert not np.array_equal(other["conv.weight"], r["conv.weight"])
    np.testing.assert_array_equal(r["bn.weight"], w["bn.weight"])  # zero std: unchanged
    np.testing.assert_array_equal(r["bn.num_batches_tracked"], w["bn.num_batches_tracked"])

    big, rnd = w["conv.weight"].astype(np.float64), r["conv.weight"].astype(np.float64)
    assert not np.array_equal(big, rnd)
    assert rnd.mean() == pytest.approx(big.mean(), abs=0.05 * big.std())
    assert rnd.std() == pytest.approx(big.std(), rel=0.03)
    rho = rank_correlation(big.reshape(1, -1), rnd.reshape(1, -1))[0]
    assert abs(rho) < 0.05  # the randomised tensor carries no trace of the original's order

    # the draws are default_rng([seed, j]) for the j-th tensor
    expected = np.random.default_rng([3, 1]).normal(w["conv.bias"].mean(), w["conv.bias"].std(), size=64)
    np.testing.assert_array_equal(r["conv.bias"], expected)
