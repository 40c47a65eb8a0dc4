"""Attribution quality measures: pixel orders, deletion/insertion curves, Gini, rank agreement,
summaries and the weight randomisation rule; checked on a tiny patch model, in closed form and
against Quantus (PixelFlipping, Sparseness)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from common import quality as q
from tests.tolerance import softmax_atol, sum_atol

# ----------------------------------------------------------------------------- a tiny patch model

H, W, C = 16, 16, 3
P = H * W
PATCH = (slice(2, 5), slice(3, 6))  # a 3x3 patch: the only pixels the model looks at
SLOPE, CENTRE = 10.0, 0.5


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _patch_predict(images: np.ndarray) -> np.ndarray:
    """uint8 (M, H, W, C) -> (M, 2): class 0 is sigmoid of the patch's mean brightness, class 1 the rest."""
    m = images[:, PATCH[0], PATCH[1], :].astype(np.float64).mean(axis=(1, 2, 3)) / 255.0
    p0 = _sigmoid(SLOPE * (m - CENTRE))
    return np.stack([p0, 1.0 - p0], axis=1)


def _patch_images(n=3, seed=0):
    """Dark noisy (H, W, C) images with a white patch: class 0 at sigmoid(5) ~ 0.993."""
    imgs = np.random.default_rng(seed).integers(0, 60, (n, H, W, C), dtype=np.uint8)
    imgs[:, PATCH[0], PATCH[1], :] = 255
    return imgs


def _patch_maps(n=3):
    maps = np.zeros((n, H, W))
    maps[:, PATCH[0], PATCH[1]] = 1.0
    return maps


TOP, FLOOR = _sigmoid(SLOPE * (1 - CENTRE)), _sigmoid(SLOPE * (0 - CENTRE))


# ----------------------------------------------------------------------------- pixel orders and perturbation


def test_rank_pixels_descending_with_stable_ties():
    maps = np.array([[[0.5, -1.0], [2.0, 0.5]], [[0.0, 0.0], [0.0, 1.0]]])
    order = q.rank_pixels(maps)
    assert order.dtype == np.int64 and order.shape == (2, 4)
    np.testing.assert_array_equal(order[0], [2, 0, 3, 1])  # 2.0, then the tied 0.5s by index, then -1.0
    np.testing.assert_array_equal(order[1], [3, 0, 1, 2])
    patch_order = q.rank_pixels(_patch_maps(1))[0]
    patch_flat = np.flatnonzero(_patch_maps(1)[0].ravel())
    np.testing.assert_array_equal(patch_order[:9], patch_flat)  # the patch first, in row-major order
    with pytest.raises(ValueError):
        q.rank_pixels(np.zeros((4, 4)))


def test_random_orders_are_seeded_permutations():
    a = q.random_orders(5, 20, seed=1)
    assert a.shape == (5, 20) and a.dtype == np.int64
    np.testing.assert_array_equal(np.sort(a, axis=1), np.tile(np.arange(20), (5, 1)))
    np.testing.assert_array_equal(a, q.random_orders(5, 20, seed=1))
    assert not np.array_equal(a, q.random_orders(5, 20, seed=2))
    assert not np.array_equal(a[0], a[1])  # one permutation per image, not one for all


def test_perturb_replaces_whole_pixels_in_order():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, C), dtype=np.uint8)
    before = images.copy()
    fill = np.full((3, 4, C), 7, dtype=np.uint8)
    orders = np.stack([np.arange(12), np.arange(12)[::-1]])
    out = q.perturb(images, fill, orders, 3)
    np.testing.assert_array_equal(images, before)  # the input is left as it was
    flat, flat_in = out.reshape(2, 12, C), images.reshape(2, 12, C)
    assert np.all(flat[0, :3] == 7) and np.all(flat[1, 9:] == 7)
    np.testing.assert_array_equal(flat[0, 3:], flat_in[0, 3:])
    np.testing.assert_array_equal(flat[1, :9], flat_in[1, :9])
    # a per-image fill: here the other image, so the changed pixels are its pixels
    swapped = q.perturb(images, images[::-1], orders, 12)
    np.testing.assert_array_equal(swapped, images[::-1])
    np.testing.assert_array_equal(q.perturb(images, fill, orders, 0), images)
    with pytest.raises(ValueError):
        q.perturb(images, fill, orders, 13)
    with pytest.raises(ValueError):
        q.perturb(images, fill, orders[:, :6], 3)
    with pytest.raises(ValueError):
        q.perturb(images, fill, np.zeros((2, 12), dtype=np.int64), 3)  # not a permutation
    with pytest.raises(ValueError):
        q.perturb(images.astype(np.float32), fill, orders, 3)


def test_deletion_of_patch_map_hits_the_floor_at_nine_pixels():
    images = _patch_images()
    fracs = q.fractions(P)  # one pixel per step
    classes = np.zeros(3, dtype=np.int64)
    fill = np.zeros((H, W, C), dtype=np.uint8)
    curves = q.perturbation_curves(
        _patch_predict, images, fill, q.rank_pixels(_patch_maps()), classes, fracs, mode="deletion"
    )
    assert curves.shape == (3, P + 1) and curves.dtype == np.float64
    # after k patch pixels turn black the patch's mean is (9 - k) / 9 of white
    k = np.arange(10)
    expected = _sigmoid(SLOPE * ((9 - k) / 9 - CENTRE))
    np.testing.assert_allclose(curves[:, :10], np.tile(expected, (3, 1)), rtol=1e-12)
    assert curves[0, 0] == pytest.approx(TOP) and curves[0, 9] == pytest.approx(FLOOR)
    np.testing.assert_allclose(curves[:, 9:], FLOOR, rtol=1e-12)  # the rest is irrelevant to the model

    for seed in range(5):
        rand = q.perturbation_curves(
            _patch_predict, images, fill, q.random_orders(3, P, seed), classes, fracs, mode="deletion"
        )
        assert np.all(rand[:, 9] > 0.5), seed  # 9 random pixels hardly touch the patch
        assert np.all(q.curve_auc(fracs, curves) < 0.1 * q.curve_auc(fracs, rand)), seed
    np.testing.assert_allclose(q.fraction_at(fracs, curves, 0.5), 4.5 / P, rtol=1e-9)  # halfway between k=4 and 5


def test_insertion_mirrors_deletion():
    images = _patch_images()
    fracs = q.fractions(P)
    classes = np.zeros(3, dtype=np.int64)
    baseline = np.zeros((3, H, W, C), dtype=np.uint8)  # per-image baselines are accepted too
    curves = q.perturbation_curves(
        _patch_predict, images, baseline, q.rank_pixels(_patch_maps()), classes, fracs, mode="insertion"
    )
    k = np.arange(10)
    np.testing.assert_allclose(curves[:, :10], np.tile(_sigmoid(SLOPE * (k / 9 - CENTRE)), (3, 1)), rtol=1e-12)
    np.testing.assert_allclose(curves[:, 9:], TOP, rtol=1e-12)
    for seed in range(5):
        rand = q.perturbation_curves(
            _patch_predict, images, baseline, q.random_orders(3, P, seed), classes, fracs, mode="insertion"
        )
        assert np.all(rand[:, 9] < 0.5), seed
        assert np.all(q.curve_auc(fracs, curves) > q.curve_auc(fracs, rand) + 0.25), seed
    # class 1 is tracked when asked for: it is 1 - class 0
    other = q.perturbation_curves(
        _patch_predict, images, baseline, q.rank_pixels(_patch_maps()), np.ones(3, np.int64), fracs, mode="insertion"
    )
    np.testing.assert_allclose(other, 1.0 - curves, rtol=1e-12)


def test_perturbation_curves_calls_predict_in_batches():
    images = _patch_images(n=5)
    sizes = []

    def counting(x):
        sizes.append(len(x))
        return _patch_predict(x)

    fracs = q.fractions(10)
    orders = q.random_orders(5, P, 0)
    args = (images, np.zeros((H, W, C), np.uint8), orders, np.zeros(5, np.int64), fracs)
    batched = q.perturbation_curves(counting, *args, mode="deletion", batch_size=16)
    assert sizes == [16, 16, 16, 7]  # 5 images x 11 fractions, never one image at a time
    # the curves do not depend on the batching; the counts are round(f * P)
    np.testing.assert_array_equal(batched, q.perturbation_curves(_patch_predict, *args, mode="deletion"))
    fill = np.zeros((H, W, C), np.uint8)
    for i, f in enumerate(fracs):
        x = q.perturb(images, fill, orders, int(round(f * P)))
        np.testing.assert_array_equal(batched[:, i], _patch_predict(x)[:, 0])


def test_perturbation_curves_rejects_bad_input():
    images = _patch_images(n=2)
    fill = np.zeros((H, W, C), np.uint8)
    orders = q.random_orders(2, P, 0)
    cls = np.zeros(2, np.int64)
    ok = q.fractions(4)
    with pytest.raises(ValueError, match="mode"):
        q.perturbation_curves(_patch_predict, images, fill, orders, cls, ok, mode="deletions")
    for bad in ([0.0, 0.5, 0.5, 1.0], [0.5, 0.2], [0.0, 1.5], [-0.1, 0.5]):
        with pytest.raises(ValueError, match="fractions"):
            q.perturbation_curves(_patch_predict, images, fill, orders, cls, np.array(bad), mode="deletion")
    with pytest.raises(ValueError):
        q.perturbation_curves(_patch_predict, images, fill[:4], orders, cls, ok, mode="deletion")
    with pytest.raises(ValueError):
        q.perturbation_curves(_patch_predict, images, fill, orders[:1], cls, ok, mode="deletion")
    with pytest.raises(ValueError):
        q.perturbation_curves(_patch_predict, images, fill, orders, np.zeros(3, np.int64), ok, mode="deletion")
    with pytest.raises(ValueError, match="classes"):
        q.perturbation_curves(_patch_predict, images, fill, orders, np.array([0, 2]), ok, mode="deletion")


# ----------------------------------------------------------------------------- curve summaries and baselines


def test_curve_auc_known_curves():
    fracs = q.fractions(4)
    np.testing.assert_allclose(fracs, [0, 0.25, 0.5, 0.75, 1])
    curves = np.stack([1 - fracs, np.ones(5), np.zeros(5), fracs**2])
    np.testing.assert_allclose(q.curve_auc(fracs, curves), [0.5, 1.0, 0.0, 0.34375])  # trapezoid of x^2 at 5 points
    with pytest.raises(ValueError):
        q.curve_auc(fracs, curves[:, :4])


def test_fraction_at_interpolates_and_gives_nan_when_never_reached():
    fracs = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    curves = np.array(
        [
            [1.0, 0.6, 0.2, 0.0],  # crosses 0.4 halfway between 1/3 and 2/3
            [1.0, 0.9, 0.8, 0.7],  # never reaches 0.4
            [0.3, 0.9, 0.1, 0.0],  # already there at the start
            [1.0, 0.4, 0.1, 0.5],  # reaches it exactly at a step; later rise ignored
        ]
    )
    out = q.fraction_at(fracs, curves, 0.4)
    np.testing.assert_allclose(out[[0, 2, 3]], [0.5, 0.0, 1 / 3])
    assert np.isnan(out[1])


def test_blurred_and_mean_image():
    imgs = np.zeros((2, 9, 9, 2), dtype=np.uint8)
    imgs[0, 4, 4, 0] = 255
    imgs[1] = 100
    out = q.blurred(imgs, sigma=1.0)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    assert 0 < out[0, 4, 4, 0] < 255 and out[0, 4, 5, 0] > 0 and out[0, 4, 4, 0] > out[0, 4, 6, 0]
    assert np.all(out[0, ..., 1] == 0)  # no mixing across channels
    assert np.all(out[1] == 100)  # nor across images; a constant image stays constant
    assert abs(int(out[0, ..., 0].sum()) - 255) <= 20  # the blur keeps the mass, up to rounding
    np.testing.assert_array_equal(q.blurred(imgs, sigma=0.0), imgs)
    m = q.mean_image(np.array([[[[0]]], [[[1]]], [[[1]]], [[[255]]]], dtype=np.uint8))  # mean 64.25
    assert m.dtype == np.uint8 and m.shape == (1, 1, 1) and m[0, 0, 0] == 64
    with pytest.raises(ValueError):
        q.blurred(imgs[0], sigma=1.0)


# ----------------------------------------------------------------------------- sparseness


def test_gini_closed_forms():
    n = 10
    one_hot = np.zeros((1, n))
    one_hot[0, 3] = -5.0  # the sign does not matter: |map|
    out = q.gini(np.concatenate([one_hot, np.full((1, n), 2.0), np.zeros((1, n))]))
    assert out[0] == pytest.approx((n - 1) / n)
    assert out[1] == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(out[2])
    # two of four equal and non-zero: sorted (0, 0, 1, 1) -> (1*1 + 3*1) / (4*2) = 0.5
    assert q.gini(np.array([[[1.0, 0.0], [0.0, 1.0]]]))[0] == pytest.approx(0.5)
    # any (N, ...) shape, flattened per image
    maps = np.random.default_rng(0).normal(size=(3, 4, 5, 2))
    np.testing.assert_allclose(q.gini(maps), q.gini(maps.reshape(3, -1)))


def test_gini_matches_quantus_sparseness():
    import quantus

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 1, 6, 6))  # (N, 1, H, W): a channel-summed map per image
    x = rng.random((4, 3, 6, 6)).astype(np.float32)  # Sparseness reads only x's shape
    metric = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)
    theirs = np.array(metric(model=None, x_batch=x, y_batch=np.zeros(4, int), a_batch=maps.copy(), channel_first=True))
    # Quantus adds 1e-7 to every |value| before the same formula: on |map| + 1e-7 ours is the same number;
    # on the map itself the two differ by that epsilon only.
    np.testing.assert_allclose(q.gini(np.abs(maps) + 1e-7), theirs, rtol=1e-12)
    np.testing.assert_allclose(q.gini(maps), theirs, atol=1e-6)


# ----------------------------------------------------------------------------- pixel flipping against Quantus


def test_deletion_curves_match_quantus_pixel_flipping():
    import quantus
    import torch

    n, h, w, c, k = 4, 6, 6, 3, 3
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, k))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, c * h * w, generator=gen) * 0.02)
        model[1].bias.zero_()
    model.eval()

    def predict(images):  # uint8 NHWC -> softmax probabilities, as the arms' predict does
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
        with torch.no_grad():
            return torch.softmax(model(x), dim=-1).numpy()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    maps = rng.normal(size=(n, h, w)).astype(np.float32)  # distinct values: no ties between pixels
    classes = predict(images).argmax(axis=1)
    pixels_per_step, baseline = 2, 50
    fracs = q.fractions(h * w // pixels_per_step)
    fill = np.full((h, w, c), baseline, dtype=np.uint8)
    ours = q.perturbation_curves(predict, images, fill, q.rank_pixels(maps), classes, fracs, mode="deletion")

    # Quantus flips C*H*W features, the map broadcast over channels, sorted descending: a pixel's C copies tie
    # and sort next to each other, so features_in_step = C * pixels flips whole pixels as we do. (Its check
    # wants H*W, not C*H*W, divisible by features_in_step: hence 6x6 images and 2 pixels per step.) Its curve
    # starts after the first step, with no point for the unperturbed image: it is our curve without fraction 0.
    # softmax=True makes it append a Softmax to this logit model, so both curves are probabilities.
    metric = quantus.PixelFlipping(
        features_in_step=c * pixels_per_step,
        perturb_baseline=float(baseline),  # a constant: our fill image of that value
        abs=False,
        normalise=False,
        disable_warnings=True,
    )
    theirs = metric(
        model=model,
        x_batch=images.transpose(0, 3, 1, 2).astype(np.float32),
        y_batch=classes,
        a_batch=maps[:, None],
        channel_first=True,
        softmax=True,
    )
    theirs = np.asarray(theirs, dtype=np.float64)
    assert theirs.shape == (n, len(fracs) - 1)
    # Same images, same float32 model, batches composed differently: each logit is a dot product of
    # C*H*W terms whose absolute values add up to at most 255 * sum|w| (pixels in 0..255), so the two
    # computations' logits lie within sum_atol of each other, and their probabilities within
    # softmax_atol of that, relative to each probability.
    magnitude = 255.0 * np.abs(model[1].weight.detach().numpy()).sum(axis=1).max()
    rtol = softmax_atol(sum_atol(c * h * w, magnitude))
    np.testing.assert_allclose(ours[:, 1:], theirs, rtol=rtol, atol=0)
    assert rtol < 0.05  # still far below what one wrongly flipped pixel does (it moves a logit by about 1)
    assert np.ptp(ours) > 0.1  # the curves move: the comparison is not between constants


# ----------------------------------------------------------------------------- rank agreement


def test_rank_correlation_identity_negation_and_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 5, 5))
    np.testing.assert_array_equal(q.rank_correlation(a, a), np.ones(3))
    np.testing.assert_allclose(q.rank_correlation(a, -a), -1.0)
    np.testing.assert_allclose(q.rank_correlation(a, -a, absolute=True), 1.0)
    # ties: average ranks, as scipy's spearmanr
    x = rng.integers(0, 4, (2, 30)).astype(float)
    y = rng.integers(0, 4, (2, 30)).astype(float)
    expected = [stats.spearmanr(x[i], y[i]).statistic for i in range(2)]
    np.testing.assert_allclose(q.rank_correlation(x, y), expected, rtol=1e-12)


def test_rank_correlation_mask_leaves_out_padding():
    rng = np.random.default_rng(1)
    a = np.zeros((2, 10, 10))
    b = np.zeros((2, 10, 10))
    a[:, 3:7, 3:7] = rng.uniform(0.1, 1.0, size=(2, 4, 4))
    b[:, 3:7, 3:7] = rng.uniform(0.1, 1.0, size=(2, 4, 4))  # unrelated to a inside; both zero in the padding
    mask = q.nonzero_mask(a, b)
    assert mask.shape == a.shape and mask.sum() == 2 * 16
    masked = q.rank_correlation(a, b, mask=mask)
    kept = [stats.spearmanr(a[i][mask[i]], b[i][mask[i]]).statistic for i in range(2)]
    np.testing.assert_allclose(masked, kept, rtol=1e-12)
    unmasked = q.rank_correlation(a, b)
    assert np.all(unmasked > 0.9) and np.all(np.abs(masked) < 0.5)  # the shared zeros alone make rho ~1
    # one mask for all images
    np.testing.assert_allclose(q.rank_correlation(a, b, mask=mask[0]), masked)
    with pytest.raises(ValueError):
        q.rank_correlation(a, b, mask=mask.astype(int))
    with pytest.raises(ValueError):
        q.rank_correlation(a, b[:, :5])


@pytest.mark.filterwarnings("error")
def test_rank_correlation_constant_is_nan_without_warnings():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 4, 4))
    b = a.copy()
    b[1] = 0.0  # constant
    mask = np.ones_like(a, dtype=bool)
    mask[2] = False
    mask[2, 0, 0] = True  # one element left: no ranking either
    out = q.rank_correlation(a, b, mask=mask)
    assert out[0] == pytest.approx(1.0) and np.isnan(out[1]) and np.isnan(out[2])


def test_nonzero_mask():
    a = np.array([[0.0, 1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, -2.0, 0.0]])
    np.testing.assert_array_equal(q.nonzero_mask(a, b), [[False, True, True, False]])
    np.testing.assert_array_equal(q.nonzero_mask(a), a != 0)
    with pytest.raises(ValueError):
        q.nonzero_mask(a, b[:, :3])
    with pytest.raises(ValueError):
        q.nonzero_mask()


# ----------------------------------------------------------------------------- summaries


def test_mean_ci_against_hand_computation():
    values = np.array([0.2, 0.5, np.nan, 0.4, 0.9, np.inf, 0.3])
    finite = np.array([0.2, 0.5, 0.4, 0.9, 0.3])
    half = stats.t.ppf(0.975, 4) * finite.std(ddof=1) / np.sqrt(5)
    mean, low, high = q.mean_ci(values)
    assert mean == pytest.approx(finite.mean())
    assert low == pytest.approx(finite.mean() - half) and high == pytest.approx(finite.mean() + half)
    assert q.mean_ci([np.nan, np.inf]) == (None, None, None)
    assert q.mean_ci([np.nan, 0.7]) == (pytest.approx(0.7), None, None)


def test_paired_p():
    a = np.linspace(1.0, 2.0, 10)
    b = a - 1.0 - np.linspace(0.0, 0.1, 10)  # a > b in every pair
    p = q.paired_p(a, b)
    assert p is not None and p < 0.05
    assert p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert q.paired_p([1.0], [0.0]) is None
    assert q.paired_p([1.0, np.nan, 2.0], [0.0, 1.0, np.nan]) is None  # one finite pair
    assert q.paired_p(a, a.copy()) is None  # all differences zero
    assert q.paired_p(a[::-1], a) > 0.05  # no consistent direction


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
    r = q.randomize_weights(w, seed=3)
    for k in w:
        np.testing.assert_array_equal(w[k], before[k])  # the input is left as it was
    assert list(r) == list(w)
    assert all(r[k].shape == w[k].shape and r[k].dtype == w[k].dtype for k in w)
    for k, v in q.randomize_weights(w, seed=3).items():
        np.testing.assert_array_equal(v, r[k])  # deterministic per seed
    other = q.randomize_weights(w, seed=4)
    assert not np.array_equal(other["conv.weight"], r["conv.weight"])
    np.testing.assert_array_equal(r["bn.weight"], w["bn.weight"])  # zero std: unchanged
    np.testing.assert_array_equal(r["bn.num_batches_tracked"], w["bn.num_batches_tracked"])

    big, rnd = w["conv.weight"].astype(np.float64), r["conv.weight"].astype(np.float64)
    assert not np.array_equal(big, rnd)
    assert rnd.mean() == pytest.approx(big.mean(), abs=0.05 * big.std())
    assert rnd.std() == pytest.approx(big.std(), rel=0.03)
    rho = q.rank_correlation(big.reshape(1, -1), rnd.reshape(1, -1))[0]
    assert abs(rho) < 0.05  # the randomised tensor carries no trace of the original's order

    # the draws are default_rng([seed, j]) for the j-th tensor
    expected = np.random.default_rng([3, 1]).normal(w["conv.bias"].mean(), w["conv.bias"].std(), size=64)
    np.testing.assert_array_equal(r["conv.bias"], expected)
