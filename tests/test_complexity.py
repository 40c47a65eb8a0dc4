"""Sparseness (common/quality/complexity.py): the Gini index, in closed form and against Quantus."""

from __future__ import annotations

import numpy as np
import pytest

from common.quality.complexity import gini

# ----------------------------------------------------------------------------- sparseness


def test_gini_closed_forms():
    n = 10
    one_hot = np.zeros((1, n))
    one_hot[0, 3] = -5.0  # the sign does not matter: |map|
    out = gini(np.concatenate([one_hot, np.full((1, n), 2.0), np.zeros((1, n))]))
    assert out[0] == pytest.approx((n - 1) / n)
    assert out[1] == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(out[2])
    # two of four equal and non-zero: sorted (0, 0, 1, 1) -> (1*1 + 3*1) / (4*2) = 0.5
    assert gini(np.array([[[1.0, 0.0], [0.0, 1.0]]]))[0] == pytest.approx(0.5)
    # any (N, ...) shape, flattened per image
    maps = np.random.default_rng(0).normal(size=(3, 4, 5, 2))
    np.testing.assert_allclose(gini(maps), gini(maps.reshape(3, -1)))


def test_gini_matches_quantus_sparseness():
    import quantus

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 1, 6, 6))  # (N, 1, H, W): a channel-summed map per image
    x = rng.random((4, 3, 6, 6)).astype(np.float32)  # Sparseness reads only x's shape
    metric = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)
    theirs = np.array(metric(model=None, x_batch=x, y_batch=np.zeros(4, int), a_batch=maps.copy(), channel_first=True))
    # Quantus adds 1e-7 to every |value| before the same formula: on |map| + 1e-7 ours is the same number;
    # on the map itself the two differ by that epsilon only.
    np.testing.assert_allclose(gini(np.abs(maps) + 1e-7), theirs, rtol=1e-12)
    np.testing.assert_allclose(gini(maps), theirs, atol=1e-6)
