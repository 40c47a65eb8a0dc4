"""Rank agreement between maps: Spearman's rho per image, and between every pair of labelled maps.

The score of the sanity checks (a map against the map of a weight-randomised model, Adebayo
et al. 2018, or of another class, Sixt et al. 2020) and of every comparison of maps across
models, seeds and libraries. Pixels that are zero in both maps compared carry no ranking
information but tie in both; :func:`nonzero_mask` leaves them out.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.explanation import channel_sum
from common.registry import ARMS, METHODS, map_label

AGREEMENT_METHOD = (
    "Spearman rank correlation of channel-summed maps, each map at the image's true class (a class every model "
    "shares), leaving out pixels that are zero in both maps"
)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two 1-D arrays (``scipy.stats.spearmanr``: average ranks for ties); NaN
    when either has fewer than two values or is constant (rho is undefined)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    # here, not at the top: SciPy's stats take half a second to import, and every arm's process
    # imports this module (through the assess stage) whether or not it computes a correlation
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spearmanr warns (and returns NaN) on degenerate input
        return float(spearmanr(a, b).statistic)


def rank_correlation(
    a: np.ndarray, b: np.ndarray, *, absolute: bool = False, mask: np.ndarray | None = None
) -> np.ndarray:
    """Spearman's rank correlation between ``a[i]`` and ``b[i]`` per image, each flattened.

    Ties get average ranks. This is the agreement score of the sanity checks as well:
    a map against the map of a weight-randomised model (Adebayo et al. 2018) or of another
    class (random logit, Sixt et al. 2020); ``absolute=True`` compares magnitudes only, as
    Adebayo et al. also report.

    Args:
        a, b: ``(N, ...)`` of the same shape.
        absolute: compare ``|a|`` and ``|b|``.
        mask: boolean ``(N, ...)`` or ``(...)`` (one for all images): the elements compared;
            None compares all (see :func:`nonzero_mask`).

    Returns:
        float64 ``(N,)``; NaN where either side is constant over the compared elements
        (fewer than two elements included).

    Raises:
        ValueError: on mismatched shapes or a non-boolean mask.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"a and b must be (N, ...) of the same shape, got {a.shape} and {b.shape}")
    shape = a.shape
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape not in (shape, shape[1:]):
            raise ValueError(f"mask must be boolean {shape} or {shape[1:]}, got {mask.dtype} {mask.shape}")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    n = shape[0]
    a, b = a.reshape(n, -1), b.reshape(n, -1)
    keep = np.ones(a.shape, dtype=bool) if mask is None else np.broadcast_to(mask, shape).reshape(a.shape)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = spearman(a[i, keep[i]], b[i, keep[i]])
    return out


def nonzero_mask(*maps: np.ndarray) -> np.ndarray:
    """Boolean mask, True where at least one of ``maps`` is non-zero.

    Elements that are zero in every map (e.g. padding that no method attributes) carry
    no ranking information but tie in every map, inflating agreement; pass this mask to
    :func:`rank_correlation` to leave them out.

    Args:
        maps: one or more arrays of the same shape ``(N, ...)``.

    Returns:
        bool, the maps' shape.

    Raises:
        ValueError: with no maps or mismatched shapes.
    """
    if not maps:
        raise ValueError("nonzero_mask needs at least one map")
    arrays = [np.asarray(m) for m in maps]
    if len({m.shape for m in arrays}) != 1:
        raise ValueError(f"maps must share one shape, got {[m.shape for m in arrays]}")
    return np.logical_or.reduce([m != 0 for m in arrays])


def agreement(maps: Mapping[str, np.ndarray], classes: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Rank agreement between attribution maps of the same images, for every pair of maps.

    For each image and each pair of labels, the two channel-summed maps are flattened and
    compared with Spearman's rank correlation; each map is taken at the class given for
    its own label (normally the class its own model predicted), so two models that
    disagree on an image are compared on what each of them actually decided. Pixels that
    are zero in both maps (padding, or pixels equal to the background everywhere) are left
    out: they carry no attribution, and their tied ranks would count as agreement.

    A constant map (e.g. all zeros) has no ranking: its rho is recorded as ``None`` in
    ``per_image`` and left out of the pair's mean (NaN-ignoring mean). A pair whose every
    image is undefined gets ``None`` as its mean.

    Args:
        maps: ``{label: attributions (N, K, H, W, C)}``, labels such as "pytorch_deep",
            "keras_gradient"; all maps cover the same N images.
        classes: ``{label: (N,) int}``, the class whose map is compared, per image.

    Returns:
        ``{"pairs": {"a~b": mean rho or None}, "n_images": {"a~b": images with a defined
        rho}, "per_image": [{"a~b": rho or None, ...} per image], "method": str}``. With
        fewer than two maps, ``pairs``, ``n_images`` and ``per_image`` are empty.

    Raises:
        ValueError: when the maps do not share N, or a label has no classes.
    """
    labels = _in_registry_order(maps)
    result: dict[str, Any] = {"pairs": {}, "n_images": {}, "per_image": [], "method": AGREEMENT_METHOD}
    if len(labels) < 2:
        return result
    picked = {lab: _maps_at_classes(maps[lab], classes.get(lab), lab) for lab in labels}
    if len({m.shape for m in picked.values()}) != 1:
        raise ValueError(f"maps must all be (N, K, H, W, C) for the same N; got {[m.shape for m in picked.values()]}")
    n = len(picked[labels[0]])
    pairs = {f"{a}~{b}": (a, b) for a, b in itertools.combinations(labels, 2)}
    rho = np.stack(  # (N, pairs)
        [rank_correlation(picked[a], picked[b], mask=nonzero_mask(picked[a], picked[b])) for a, b in pairs.values()],
        axis=1,
    )
    for j, pair in enumerate(pairs):
        defined = ~np.isnan(rho[:, j])
        result["pairs"][pair] = float(rho[defined, j].mean()) if defined.any() else None
        result["n_images"][pair] = int(defined.sum())
    result["per_image"] = [
        {pair: (None if np.isnan(rho[i, j]) else float(rho[i, j])) for j, pair in enumerate(pairs)} for i in range(n)
    ]
    return result


def _in_registry_order(maps: Mapping[str, np.ndarray]) -> list[str]:
    """The labels of ``maps``: registered arms' and methods' first, in registry order; others after, as given."""
    known = [map_label(arm, method) for arm in ARMS for method in METHODS]
    return [lab for lab in known if lab in maps] + [lab for lab in maps if lab not in known]


def _maps_at_classes(attributions: np.ndarray, classes: np.ndarray | None, label: str) -> np.ndarray:
    """(N, H*W): each image's channel-summed map at its class, float64.

    Raises:
        ValueError: the attributions are not (N, K, H, W, C), or the classes are missing or not (N,).
    """
    attributions = np.asarray(attributions)
    if attributions.ndim != 5:
        raise ValueError(f"maps must all be (N, K, H, W, C) for the same N; {label!r} is {attributions.shape}")
    if classes is None:
        raise ValueError(f"no classes given for map {label!r}")
    n = len(attributions)
    cls = np.asarray(classes).astype(int).ravel()
    if cls.size != n:
        raise ValueError(f"classes for {label!r} has {cls.size} entries, maps have {n} images")
    return channel_sum(attributions[np.arange(n), cls]).reshape(n, -1).astype(np.float64)


def top_k_agreement(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """Feature agreement (Krishna et al. 2022, "The Disagreement Problem in Explainable Machine
    Learning"): the share of the top-k pixels by |map| that two maps have in common, per image.

    Args:
        a, b: ``(N, H, W)`` maps.
        fraction: k as a share of the pixels (``k = max(1, round(fraction * H*W))``).

    Returns:
        float64 ``(N,)`` in [0, 1]; the expected value for two unrelated maps is ``k / (H*W)``.
    """
    top_a, top_b = _top_k(a, fraction), _top_k(b, fraction)
    return np.array([len(np.intersect1d(x, y)) / len(x) for x, y in zip(top_a, top_b, strict=True)])


def sign_agreement(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """Sign agreement (Krishna et al. 2022): the share of the top-k pixels by |map| that two maps
    have in common *and* give the same sign, per image (``(N,)``, in [0, 1])."""
    a, b = _as_maps(a, b)
    top_a, top_b = _top_k(a, fraction), _top_k(b, fraction)
    out = []
    for i, (x, y) in enumerate(zip(top_a, top_b, strict=True)):
        shared = np.intersect1d(x, y)
        out.append(np.sum(np.sign(a[i].ravel()[shared]) == np.sign(b[i].ravel()[shared])) / len(x))
    return np.array(out, dtype=np.float64)


def _as_maps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must be (N, H, W) of the same shape, got {a.shape} and {b.shape}")
    return a, b


def _top_k(maps: np.ndarray, fraction: float) -> np.ndarray:
    """(N, k): each map's k pixels of largest |value| (flat indices; ties in index order)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or not 0 < fraction <= 1:
        raise ValueError(f"maps must be (N, H, W) and fraction in (0, 1], got {maps.shape} and {fraction}")
    flat = np.abs(maps.reshape(len(maps), -1))
    k = max(1, int(round(fraction * flat.shape[1])))
    return np.argsort(-flat, axis=1, kind="stable")[:, :k]


def structural_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (``skimage.metrics.structural_similarity``, as Quantus's ``ssim``) of two signed maps per
    image, each scaled by its largest |value| first (so values lie in [-1, 1]: data range 2); the
    window is 7 pixels, or the largest odd size the map holds. NaN for an all-zero map."""
    from skimage.metrics import structural_similarity as ssim

    a, b = _as_maps(a, b)
    side = min(a.shape[1:])
    window = min(7, side if side % 2 else side - 1)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        sa, sb = np.abs(a[i]).max(), np.abs(b[i]).max()
        if sa > 0 and sb > 0 and window >= 3:
            out[i] = ssim(a[i] / sa, b[i] / sb, data_range=2.0, win_size=window)
    return out


def attenuation_ceiling(reliability_a: float | None, reliability_b: float | None) -> float | None:
    """The most two maps measured with noise can agree: ``sqrt(r_a * r_b)`` (Spearman's correction
    for attenuation), from each map's agreement with a second measurement of itself on the same
    images (two seeds of a sampled method; 1 for a deterministic one). None when either is missing
    or not positive."""
    if reliability_a is None or reliability_b is None or reliability_a <= 0 or reliability_b <= 0:
        return None
    return float(np.sqrt(reliability_a * reliability_b))
