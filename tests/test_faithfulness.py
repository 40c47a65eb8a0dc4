"""Deletion and insertion curves (common/quality/faithfulness.py): on a tiny patch model whose answers
are known, and against Quantus's pixel flipping."""

from __future__ import annotations

import numpy as np
import pytest

from common.quality.faithfulness import (
    blurred,
    curve_auc,
    fraction_at,
    fractions,
    mean_image,
    perturb,
    perturbation_curves,
    random_orders,
    rank_pixels,
)
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
    order = rank_pixels(maps)
    assert order.dtype == np.int64 and order.shape == (2, 4)
    np.testing.assert_array_equal(order[0], [2, 0, 3, 1])  # 2.0, then the tied 0.5s by index, then -1.0
    np.testing.assert_array_equal(order[1], [3, 0, 1, 2])
    patch_order = rank_pixels(_patch_maps(1))[0]
    patch_flat = np.flatnonzero(_patch_maps(1)[0].ravel())
    np.testing.assert_array_equal(patch_order[:9], patch_flat)  # the patch first, in row-major order
    with pytest.raises(ValueError):
        rank_pixels(np.zeros((4, 4)))


def test_random_orders_are_seeded_permutations():
    a = random_orders(5, 20, seed=1)
    assert a.shape == (5, 20) and a.dtype == np.int64
    np.testing.assert_array_equal(np.sort(a, axis=1), np.tile(np.arange(20), (5, 1)))
    np.testing.assert_array_equal(a, random_orders(5, 20, seed=1))
    assert not np.array_equal(a, random_orders(5, 20, seed=2))
    assert not np.array_equal(a[0], a[1])  # one permutation per image, not one for all


def test_perturb_replaces_whole_pixels_in_order():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, C), dtype=np.uint8)
    before = images.copy()
    fill = np.full((3, 4, C), 7, dtype=np.uint8)
    orders = np.stack([np.arange(12), np.arange(12)[::-1]])
    out = perturb(images, fill, orders, 3)
    np.testing.assert_array_equal(images, before)  # the input is left as it was
    flat, flat_in = out.reshape(2, 12, C), images.reshape(2, 12, C)
    assert np.all(flat[0, :3] == 7) and np.all(flat[1, 9:] == 7)
    np.testing.assert_array_equal(flat[0, 3:], flat_in[0, 3:])
    np.testing.assert_array_equal(flat[1, :9], flat_in[1, :9])
    # a per-image fill: here the other image, so the changed pixels are its pixels
    swapped = perturb(images, images[::-1], orders, 12)
    np.testing.assert_array_equal(swapped, images[::-1])
    np.testing.assert_array_equal(perturb(images, fill, orders, 0), images)
    with pytest.raises(ValueError):
        perturb(images, fill, orders, 13)
    with pytest.raises(ValueError):
        perturb(images, fill, orders[:, :6], 3)
    with pytest.raises(ValueError):
        perturb(images, fill, np.zeros((2, 12), dtype=np.int64), 3)  # not a permutation
    with pytest.raises(ValueError):
        perturb(images.astype(np.float32), fill, orders, 3)


def test_deletion_of_patch_map_hits_the_floor_at_nine_pixels():
    images = _patch_images()
    fracs = fractions(P)  # one pixel per step
    classes = np.zeros(3, dtype=np.int64)
    fill = np.zeros((H, W, C), dtype=np.uint8)
    curves = perturbation_curves(
        _patch_predict, images, fill, rank_pixels(_patch_maps()), classes, fracs, mode="deletion"
    )
    assert curves.shape == (3, P + 1) and curves.dtype == np.float64
    # after k patch pixels turn black the patch's mean is (9 - k) / 9 of white
    k = np.arange(10)
    expected = _sigmoid(SLOPE * ((9 - k) / 9 - CENTRE))
    np.testing.assert_allclose(curves[:, :10], np.tile(expected, (3, 1)), rtol=1e-12)
    assert curves[0, 0] == pytest.approx(TOP) and curves[0, 9] == pytest.approx(FLOOR)
    np.testing.assert_allclose(curves[:, 9:], FLOOR, rtol=1e-12)  # the rest is irrelevant to the model

    for seed in range(5):
        rand = perturbation_curves(
            _patch_predict, images, fill, random_orders(3, P, seed), classes, fracs, mode="deletion"
        )
        assert np.all(rand[:, 9] > 0.5), seed  # 9 random pixels hardly touch the patch
        assert np.all(curve_auc(fracs, curves) < 0.1 * curve_auc(fracs, rand)), seed
    np.testing.assert_allclose(fraction_at(fracs, curves, 0.5), 4.5 / P, rtol=1e-9)  # halfway between k=4 and 5


def test_insertion_mirrors_deletion():
    images = _patch_images()
    fracs = fractions(P)
    classes = np.zeros(3, dtype=np.int64)
    baseline = np.zeros((3, H, W, C), dtype=np.uint8)  # per-image baselines are accepted too
    curves = perturbation_curves(
        _patch_predict, images, baseline, rank_pixels(_patch_maps()), classes, fracs, mode="insertion"
    )
    k = np.arange(10)
    np.testing.assert_allclose(curves[:, :10], np.tile(_sigmoid(SLOPE * (k / 9 - CENTRE)), (3, 1)), rtol=1e-12)
    np.testing.assert_allclose(curves[:, 9:], TOP, rtol=1e-12)
    for seed in range(5):
        rand = perturbation_curves(
            _patch_predict, images, baseline, random_orders(3, P, seed), classes, fracs, mode="insertion"
        )
        assert np.all(rand[:, 9] < 0.5), seed
        assert np.all(curve_auc(fracs, curves) > curve_auc(fracs, rand) + 0.25), seed
    # class 1 is tracked when asked for: it is 1 - class 0
    other = perturbation_curves(
        _patch_predict, images, baseline, rank_pixels(_patch_maps()), np.ones(3, np.int64), fracs, mode="insertion"
    )
    np.testing.assert_allclose(other, 1.0 - curves, rtol=1e-12)


def test_perturbation_curves_calls_predict_in_batches():
    images = _patch_images(n=5)
    sizes = []

    def counting(x):
        sizes.append(len(x))
        return _patch_predict(x)

    fracs = fractions(10)
    orders = random_orders(5, P, 0)
    args = (images, np.zeros((H, W, C), np.uint8), orders, np.zeros(5, np.int64), fracs)
    batched = perturbation_curves(counting, *args, mode="deletion", batch_size=16)
    assert sizes == [16, 16, 16, 7]  # 5 images x 11 fractions, never one image at a time
    # the curves do not depend on the batching; the counts are round(f * P)
    np.testing.assert_array_equal(batched, perturbation_curves(_patch_predict, *args, mode="deletion"))
    fill = np.zeros((H, W, C), np.uint8)
    for i, f in enumerate(fracs):
        x = perturb(images, fill, orders, int(round(f * P)))
        np.testing.assert_array_equal(batched[:, i], _patch_predict(x)[:, 0])


def test_perturbation_curves_rejects_bad_input():
    images = _patch_images(n=2)
    fill = np.zeros((H, W, C), np.uint8)
    orders = random_orders(2, P, 0)
    cls = np.zeros(2, np.int64)
    ok = fractions(4)
    with pytest.raises(ValueError, match="mode"):
        perturbation_curves(_patch_predict, images, fill, orders, cls, ok, mode="deletions")
    for bad in ([0.0, 0.5, 0.5, 1.0], [0.5, 0.2], [0.0, 1.5], [-0.1, 0.5]):
        with pytest.raises(ValueError, match="fractions"):
            perturbation_curves(_patch_predict, images, fill, orders, cls, np.array(bad), mode="deletion")
    with pytest.raises(ValueError):
        perturbation_curves(_patch_predict, images, fill[:4], orders, cls, ok, mode="deletion")
    with pytest.raises(ValueError):
        perturbation_curves(_patch_predict, images, fill, orders[:1], cls, ok, mode="deletion")
    with pytest.raises(ValueError):
        perturbation_curves(_patch_predict, images, fill, orders, np.zeros(3, np.int64), ok, mode="deletion")
    with pytest.raises(ValueError, match="classes"):
        perturbation_curves(_patch_predict, images, fill, orders, np.array([0, 2]), ok, mode="deletion")


# ----------------------------------------------------------------------------- curve summaries and baselines


def test_curve_auc_known_curves():
    fracs = fractions(4)
    np.testing.assert_allclose(fracs, [0, 0.25, 0.5, 0.75, 1])
    curves = np.stack([1 - fracs, np.ones(5), np.zeros(5), fracs**2])
    np.testing.assert_allclose(curve_auc(fracs, curves), [0.5, 1.0, 0.0, 0.34375])  # trapezoid of x^2 at 5 points
    with pytest.raises(ValueError):
        curve_auc(fracs, curves[:, :4])


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
    out = fraction_at(fracs, curves, 0.4)
    np.testing.assert_allclose(out[[0, 2, 3]], [0.5, 0.0, 1 / 3])
    assert np.isnan(out[1])


def test_blurred_and_mean_image():
    imgs = np.zeros((2, 9, 9, 2), dtype=np.uint8)
    imgs[0, 4, 4, 0] = 255
    imgs[1] = 100
    out = blurred(imgs, sigma=1.0)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    assert 0 < out[0, 4, 4, 0] < 255 and out[0, 4, 5, 0] > 0 and out[0, 4, 4, 0] > out[0, 4, 6, 0]
    assert np.all(out[0, ..., 1] == 0)  # no mixing across channels
    assert np.all(out[1] == 100)  # nor across images; a constant image stays constant
    assert abs(int(out[0, ..., 0].sum()) - 255) <= 20  # the blur keeps the mass, up to rounding
    np.testing.assert_array_equal(blurred(imgs, sigma=0.0), imgs)
    m = mean_image(np.array([[[[0]]], [[[1]]], [[[1]]], [[[255]]]], dtype=np.uint8))  # mean 64.25
    assert m.dtype == np.uint8 and m.shape == (1, 1, 1) and m[0, 0, 0] == 64
    with pytest.raises(ValueError):
        blurred(imgs[0], sigma=1.0)


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
    fracs = fractions(h * w // pixels_per_step)
    fill = np.full((h, w, c), baseline, dtype=np.uint8)
    ours = perturbation_curves(predict, images, fill, rank_pixels(maps), classes, fracs, mode="deletion")

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
