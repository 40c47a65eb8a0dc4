"""Deletion and insertion curves (Petsiuk et al. 2018, RISE): how fast a class's score falls or
rises as pixels change in the order a map ranks them, against random orders."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

MODES = ("deletion", "insertion")


def rank_pixels(maps: np.ndarray) -> np.ndarray:
    """Pixels of each map, most important first.

    Args:
        maps: ``(N, H, W)`` channel-summed maps.

    Returns:
        int64 ``(N, H*W)``: row-major flat pixel indices in descending map value; ties
        keep index order (stable sort); NaN values come last.

    Raises:
        ValueError: when ``maps`` is not 3-D.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {maps.shape}")
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)  # float: negating unsigned ints would wrap
    return np.argsort(-flat, axis=1, kind="stable").astype(np.int64)


def random_orders(n_images: int, n_pixels: int, seed: int) -> np.ndarray:
    """One random permutation of ``range(n_pixels)`` per image, from ``np.random.default_rng(seed)``.

    Returns:
        int64 ``(n_images, n_pixels)``.

    Raises:
        ValueError: when a count is negative.
    """
    if n_images < 0 or n_pixels < 0:
        raise ValueError(f"counts must be >= 0, got n_images={n_images}, n_pixels={n_pixels}")
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(n_pixels, dtype=np.int64), (n_images, 1))
    return rng.permuted(base, axis=1)


def _check_orders(orders: np.ndarray, n_images: int, n_pixels: int) -> np.ndarray:
    """``orders`` as int64 ``(N, P)``, each row a permutation of ``range(P)``; ValueError otherwise."""
    orders = np.asarray(orders)
    if orders.shape != (n_images, n_pixels):
        raise ValueError(f"orders must be (N, H*W) = {(n_images, n_pixels)}, got {orders.shape}")
    if not np.issubdtype(orders.dtype, np.integer):
        raise ValueError(f"orders must be integer pixel indices, got dtype {orders.dtype}")
    if not np.array_equal(np.sort(orders, axis=1), np.broadcast_to(np.arange(n_pixels), orders.shape)):
        raise ValueError("each row of orders must be a permutation of range(H*W)")
    return orders.astype(np.int64, copy=False)


def _check_images_fill(images: np.ndarray, fill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, H, W, C)`` and fill broadcast to the same shape; ValueError otherwise."""
    images = np.asarray(images)
    fill = np.asarray(fill)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if fill.dtype != np.uint8 or fill.shape not in (images.shape, images.shape[1:]):
        raise ValueError(f"fill must be uint8 {images.shape} or {images.shape[1:]}, got {fill.dtype} {fill.shape}")
    return images, np.broadcast_to(fill, images.shape)


def perturb(images: np.ndarray, fill: np.ndarray, orders: np.ndarray, n_changed: int) -> np.ndarray:
    """Replace the first ``n_changed`` pixels of each image's order by ``fill``'s (all channels).

    Args:
        images: uint8 ``(N, H, W, C)``.
        fill: uint8 ``(N, H, W, C)`` (one per image) or ``(H, W, C)`` (one for all).
        orders: ``(N, H*W)`` row-major flat pixel indices, each row a permutation.
        n_changed: pixels changed per image, ``0 <= n_changed <= H*W``.

    Returns:
        uint8 ``(N, H, W, C)``: a copy of ``images``; ``images`` itself is left as it was.

    Raises:
        ValueError: on a wrong shape or dtype, or ``n_changed`` out of range.
    """
    images, fill = _check_images_fill(images, fill)
    n, h, w, c = images.shape
    orders = _check_orders(orders, n, h * w)
    if not 0 <= int(n_changed) <= h * w:
        raise ValueError(f"n_changed must be in [0, {h * w}], got {n_changed}")
    out = images.reshape(n, h * w, c).copy()  # (N, P, C)
    rows = np.arange(n)[:, None]
    picked = orders[:, : int(n_changed)]  # (N, n_changed)
    out[rows, picked] = fill.reshape(n, h * w, c)[rows, picked]
    return out.reshape(images.shape)


def fractions(steps: int, spacing: str = "linear", n_pixels: int | None = None) -> np.ndarray:
    """``steps + 1`` fractions of the pixels from 0 to 1 inclusive.

    ``"linear"``: evenly spaced (``np.linspace(0, 1, steps + 1)``). ``"log"``: 0, then ``steps``
    fractions evenly spaced on a log scale from ``1 / steps**2`` (at least one pixel of
    ``n_pixels``) to 1, dense at the start, where deletion and insertion curves move.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if spacing == "linear":
        return np.linspace(0.0, 1.0, steps + 1)
    if spacing != "log":
        raise ValueError(f"spacing must be linear or log, got {spacing!r}")
    first = max(1.0 / steps**2, 1.0 / n_pixels if n_pixels else 0.0)
    return np.concatenate([[0.0], np.geomspace(first, 1.0, steps)])


def _check_fractions(fracs: np.ndarray) -> np.ndarray:
    """``fracs`` as float64 ``(S,)``, strictly increasing within [0, 1]; ValueError otherwise."""
    fracs = np.asarray(fracs, dtype=np.float64)
    if fracs.ndim != 1 or fracs.size == 0:
        raise ValueError(f"fractions must be a non-empty 1-D array, got shape {fracs.shape}")
    if not (np.all(np.isfinite(fracs)) and fracs[0] >= 0.0 and fracs[-1] <= 1.0 and np.all(np.diff(fracs) > 0)):
        raise ValueError(f"fractions must be strictly increasing within [0, 1], got {fracs}")
    return fracs


def _perturbed_batches(
    start: np.ndarray, end: np.ndarray, orders: np.ndarray, counts: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(images (B, H, W, C), image index (B,), step index (B,))``: image i with its first
    ``counts[s]`` ordered pixels taken from ``end`` instead of ``start``, for every (i, s)."""
    n, h, w, c = start.shape
    flat_start = start.reshape(n, h * w, c)
    flat_end = end.reshape(n, h * w, c)
    pairs = [(i, s) for i in range(n) for s in range(len(counts))]
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        batch = np.empty((len(chunk), h * w, c), dtype=start.dtype)  # (B, P, C)
        for b, (i, s) in enumerate(chunk):
            batch[b] = flat_start[i]
            picked = orders[i, : counts[s]]
            batch[b, picked] = flat_end[i, picked]
        idx = np.asarray(chunk, dtype=np.int64).reshape(-1, 2)
        yield batch.reshape(len(chunk), h, w, c), idx[:, 0], idx[:, 1]


def perturbation_curves(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    fill: np.ndarray,
    orders: np.ndarray,
    classes: np.ndarray,
    fractions: np.ndarray,
    *,
    mode: str,
    batch_size: int = 64,
) -> np.ndarray:
    """Deletion or insertion curves (Petsiuk et al. 2018, RISE): a class's probability as pixels change in order.

    At fraction ``f`` the first ``round(f * H*W)`` pixels of each image's order are changed
    (all channels of a pixel):

    - ``"deletion"`` starts at the image and replaces those pixels by ``fill`` (in this
      study the background set's mean image): a faithful map's order makes the score
      fall fast;
    - ``"insertion"`` starts at ``fill`` (a baseline: blurred copy or mean image) and puts
      back the image's own pixels: a faithful map's order makes the score rise fast.

    All perturbed images of all images and fractions go through ``predict`` in batches of
    ``batch_size``, built as they are needed.

    Args:
        predict: uint8 ``(M, H, W, C)`` -> class probabilities ``(M, K)``.
        images: uint8 ``(N, H, W, C)``.
        fill: uint8 ``(N, H, W, C)`` or ``(H, W, C)``.
        orders: ``(N, H*W)`` pixel orders, most important first (:func:`rank_pixels`,
            :func:`random_orders`).
        classes: ``(N,)`` int, the class whose probability is tracked per image.
        fractions: ``(S,)`` strictly increasing within [0, 1] (:func:`fractions`).
        mode: ``"deletion"`` or ``"insertion"``.
        batch_size: images per ``predict`` call.

    Returns:
        float64 ``(N, S)``: ``predict(...)[:, classes[i]]`` of image i at each fraction.

    Raises:
        ValueError: on a bad mode, fractions, batch size or shape, a class out of range,
            or a ``predict`` output that is not ``(M, K)``.
    """
    images, fill, orders, classes, fracs = _check_curve_inputs(
        images, fill, orders, classes, fractions, mode, batch_size
    )
    n, h, w, _ = images.shape
    counts = np.rint(fracs * h * w).astype(np.int64)  # pixels changed at each fraction

    start, end = (images, fill) if mode == "deletion" else (fill, images)
    curves = np.empty((n, len(fracs)), dtype=np.float64)
    for batch, rows, steps in _perturbed_batches(start, end, orders, counts, int(batch_size)):
        probs = np.asarray(predict(batch))
        if probs.ndim != 2 or probs.shape[0] != len(batch):
            raise ValueError(f"predict must return (M, K) = ({len(batch)}, K), got {probs.shape}")
        if classes.max() >= probs.shape[1]:
            raise ValueError(f"classes must be < K = {probs.shape[1]}, got max {classes.max()}")
        curves[rows, steps] = probs[np.arange(len(batch)), classes[rows]]
    return curves


def _check_curve_inputs(images, fill, orders, classes, fractions, mode: str, batch_size: int) -> tuple:
    """:func:`perturbation_curves`' inputs as it uses them; ValueError for any it cannot."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, fill = _check_images_fill(images, fill)
    n, h, w, _ = images.shape
    orders = _check_orders(orders, n, h * w)
    fracs = _check_fractions(fractions)
    classes = np.asarray(classes)
    if classes.shape != (n,) or not np.issubdtype(classes.dtype, np.integer) or np.any(classes < 0):
        raise ValueError(f"classes must be (N,) = ({n},) non-negative ints, got {classes.dtype} {classes.shape}")
    return images, fill, orders, classes, fracs


def _check_curves(fracs: np.ndarray, curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fracs = _check_fractions(fracs)
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] != fracs.size:
        raise ValueError(f"curves must be (N, S) with S = {fracs.size}, got {curves.shape}")
    return fracs, curves


def curve_auc(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the fraction axis (trapezoid rule, ``np.trapezoid``).

    With fractions spanning [0, 1] and probabilities in [0, 1] this is the normalised
    area of Petsiuk et al. 2018 (RISE), itself in [0, 1]: lower is better for deletion,
    higher for insertion.

    Args:
        fractions: ``(S,)`` strictly increasing within [0, 1].
        curves: ``(N, S)`` from :func:`perturbation_curves`.

    Returns:
        float64 ``(N,)``.

    Raises:
        ValueError: on bad fractions or a shape mismatch.
    """
    fracs, curves = _check_curves(fractions, curves)
    return np.trapezoid(curves, fracs, axis=1)


def fraction_at(fractions: np.ndarray, curves: np.ndarray, level: float) -> np.ndarray:
    """First fraction at which each curve falls to ``level`` or below, linearly interpolated between steps.

    For deletion with ``level = 1/K`` this is the fraction of pixels removed at which the
    class's score reaches chance.

    Args:
        fractions: ``(S,)`` strictly increasing within [0, 1].
        curves: ``(N, S)``.
        level: the threshold.

    Returns:
        float64 ``(N,)``: ``fractions[0]`` where a curve starts at or below ``level``;
        NaN where it never gets there.

    Raises:
        ValueError: on bad fractions or a shape mismatch.
    """
    fracs, curves = _check_curves(fractions, curves)
    out = np.full(curves.shape[0], np.nan)
    below = curves <= level  # NaN compares False: never "below"
    for i in np.flatnonzero(below.any(axis=1)):
        j = int(np.argmax(below[i]))
        if j == 0:
            out[i] = fracs[0]
            continue
        hi, lo = curves[i, j - 1], curves[i, j]  # hi > level >= lo
        out[i] = fracs[j - 1] + (hi - level) / (hi - lo) * (fracs[j] - fracs[j - 1])
    return out


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each image and channel (over H and W only): an insertion baseline.

    Args:
        images: ``(N, H, W, C)``.
        sigma: standard deviation of the Gaussian, in pixels (``scipy.ndimage.gaussian_filter``).

    Returns:
        uint8 ``(N, H, W, C)``, rounded and clipped to [0, 255].

    Raises:
        ValueError: when ``images`` is not 4-D or ``sigma`` is negative.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    # here, not at the top: SciPy's ndimage takes 0.2 s to import, and every arm's process imports
    # this module (through the assess stage) whether or not it blurs
    from scipy import ndimage

    out = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mean_image(images: np.ndarray) -> np.ndarray:
    """Per-pixel mean of ``(N, H, W, C)`` images, rounded: uint8 ``(H, W, C)`` (the deletion fill).

    Raises:
        ValueError: when ``images`` is not a non-empty 4-D array.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be non-empty (N, H, W, C), got shape {images.shape}")
    return np.clip(np.rint(images.astype(np.float64).mean(axis=0)), 0, 255).astype(np.uint8)
