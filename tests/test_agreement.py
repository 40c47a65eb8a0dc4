"""Rank agreement between maps (common/quality/agreement.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from common.quality.agreement import nonzero_mask, rank_correlation

# ----------------------------------------------------------------------------- rank agreement


def test_rank_correlation_identity_negation_and_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 5, 5))
    np.testing.assert_array_equal(rank_correlation(a, a), np.ones(3))
    np.testing.assert_allclose(rank_correlation(a, -a), -1.0)
    np.testing.assert_allclose(rank_correlation(a, -a, absolute=True), 1.0)
    # ties: average ranks, as scipy's spearmanr
    x = rng.integers(0, 4, (2, 30)).astype(float)
    y = rng.integers(0, 4, (2, 30)).astype(float)
    expected = [stats.spearmanr(x[i], y[i]).statistic for i in range(2)]
    np.testing.assert_allclose(rank_correlation(x, y), expected, rtol=1e-12)


def test_rank_correlation_mask_leaves_out_padding():
    rng = np.random.default_rng(1)
    a = np.zeros((2, 10, 10))
    b = np.zeros((2, 10, 10))
    a[:, 3:7, 3:7] = rng.uniform(0.1, 1.0, size=(2, 4, 4))
    b[:, 3:7, 3:7] = rng.uniform(0.1, 1.0, size=(2, 4, 4))  # unrelated to a inside; both zero in the padding
    mask = nonzero_mask(a, b)
    assert mask.shape == a.shape and mask.sum() == 2 * 16
    masked = rank_correlation(a, b, mask=mask)
    kept = [stats.spearmanr(a[i][mask[i]], b[i][mask[i]]).statistic for i in range(2)]
    np.testing.assert_allclose(masked, kept, rtol=1e-12)
    unmasked = rank_correlation(a, b)
    assert np.all(unmasked > 0.9) and np.all(np.abs(masked) < 0.5)  # the shared zeros alone make rho ~1
    # one mask for all images
    np.testing.assert_allclose(rank_correlation(a, b, mask=mask[0]), masked)
    with pytest.raises(ValueError):
        rank_correlation(a, b, mask=mask.astype(int))
    with pytest.raises(ValueError):
        rank_correlation(a, b[:, :5])


@pytest.mark.filterwarnings("error")
def test_rank_correlation_constant_is_nan_without_warnings():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 4, 4))
    b = a.copy()
    b[1] = 0.0  # constant
    mask = np.ones_like(a, dtype=bool)
    mask[2] = False
    mask[2, 0, 0] = True  # one element left: no ranking either
    out = rank_correlation(a, b, mask=mask)
    assert out[0] == pytest.approx(1.0) and np.isnan(out[1]) and np.isnan(out[2])


def test_nonzero_mask():
    a = np.array([[0.0, 1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, -2.0, 0.0]])
    np.testing.assert_array_equal(nonzero_mask(a, b), [[False, True, True, False]])
    np.testing.assert_array_equal(nonzero_mask(a), a != 0)
    with pytest.raises(ValueError):
        nonzero_mask(a, b[:, :3])
    with pytest.raises(ValueError):
        nonzero_mask()


def test_top_k_and_sign_agreement_on_known_maps():
    from common.quality.agreement import sign_agreement, top_k_agreement

    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 10, 10))
    assert top_k_agreement(a, a, 0.1).tolist() == [1.0, 1.0]
    assert top_k_agreement(a, -a, 0.1).tolist() == [1.0, 1.0]  # the same pixels matter, by |map|
    assert sign_agreement(a, -a, 0.1).tolist() == [0.0, 0.0]  # ... with the opposite signs
    b = a.copy()
    b[:, :, :] = 0
    b[0, 0, :10] = np.arange(1, 11)  # image 0: only the first row matters in b
    top_a = set(np.argsort(-np.abs(a[0]).ravel(), kind="stable")[:10].tolist())
    assert top_k_agreement(a, b, 0.1)[0] == pytest.approx(len(top_a & set(range(10))) / 10)


def test_structural_similarity_and_the_attenuation_ceiling():
    from common.quality.agreement import attenuation_ceiling, structural_similarity

    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 16, 16))
    np.testing.assert_allclose(structural_similarity(a, 5 * a), 1.0)  # scaled alike: SSIM of normalised maps
    assert np.all(structural_similarity(a, rng.normal(size=a.shape)) < 0.3)
    assert np.isnan(structural_similarity(np.zeros_like(a), a)).all()
    assert attenuation_ceiling(0.81, 1.0) == pytest.approx(0.9)
    assert attenuation_ceiling(None, 1.0) is None and attenuation_ceiling(-0.1, 1.0) is None
