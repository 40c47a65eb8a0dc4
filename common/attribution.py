"""Framework-free operations on SHAP attributions: reduction and agreement.

Attributions arrive as float ``(N, K, H, W, C)`` arrays (image, class, row, column,
channel) from :class:`common.arm.Explanation`. Maps are compared after summing over
channels, as shap's own image plot does.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.registry import ARMS, METHODS, map_label

AGREEMENT_METHOD = (
    "Spearman rank correlation of channel-summed maps, each map for its own model's predicted class, "
    "leaving out pixels that are zero in both maps"
)


def channel_sum(attr: np.ndarray) -> np.ndarray:
    """Sum attributions over the trailing channel axis: (..., H, W, C) -> (..., H, W)."""
    return np.asarray(attr).sum(axis=-1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two flattened maps; NaN when either map is constant (rho undefined)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    # here, not at the top: SciPy's stats take half a second to import, and every arm process
    # imports this module (for its class table) whether or not it computes a correlation
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spearmanr warns (and returns NaN) on degenerate input
        return float(spearmanr(a, b).statistic)


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
    # Registered arms' and methods' labels first, in registry order; any others after them, as given.
    known = [map_label(arm, method) for arm in ARMS for method in METHODS]
    labels = [lab for lab in known if lab in maps] + [lab for lab in maps if lab not in known]
    result: dict[str, Any] = {"pairs": {}, "n_images": {}, "per_image": [], "method": AGREEMENT_METHOD}
    if len(labels) < 2:
        return result

    arrays = {lab: np.asarray(maps[lab]) for lab in labels}
    n_images = {a.shape[0] for a in arrays.values()}
    if len(n_images) != 1 or any(a.ndim != 5 for a in arrays.values()):
        raise ValueError(f"maps must all be (N, K, H, W, C) for the same N; got {[a.shape for a in arrays.values()]}")
    n = n_images.pop()
    picked = {}
    for lab in labels:
        if lab not in classes:
            raise ValueError(f"no classes given for map {lab!r}")
        cls = np.asarray(classes[lab]).astype(int).ravel()
        if cls.size != n:
            raise ValueError(f"classes for {lab!r} has {cls.size} entries, maps have {n} images")
        # (N, H*W): each image's channel-summed map at its own class
        picked[lab] = channel_sum(arrays[lab][np.arange(n), cls]).reshape(n, -1).astype(np.float64)

    pairs = [f"{a}~{b}" for a, b in itertools.combinations(labels, 2)]
    rho = np.full((n, len(pairs)), np.nan)
    for j, (a, b) in enumerate(itertools.combinations(labels, 2)):
        keep = (picked[a] != 0) | (picked[b] != 0)  # (N, H*W)
        for i in range(n):
            rho[i, j] = _spearman(picked[a][i][keep[i]], picked[b][i][keep[i]])

    for j, pair in enumerate(pairs):
        defined = ~np.isnan(rho[:, j])
        result["pairs"][pair] = float(rho[defined, j].mean()) if defined.any() else None
        result["n_images"][pair] = int(defined.sum())
    result["per_image"] = [
        {pair: (None if np.isnan(rho[i, j]) else float(rho[i, j])) for j, pair in enumerate(pairs)} for i in range(n)
    ]
    return result


def to_image_plot_lists(attributions: np.ndarray) -> list[np.ndarray]:
    """(N, K, H, W, C) -> list of K arrays of shape (N, H, W, C), as shap.image_plot expects.

    shap.image_plot handed the 5-D array itself silently plots the sum over classes.
    """
    attributions = np.asarray(attributions)
    if attributions.ndim != 5:
        raise ValueError(f"expected attributions of shape (N, K, H, W, C), got {attributions.shape}")
    return [attributions[:, k] for k in range(attributions.shape[1])]


def class_table(selection: str, predicted: np.ndarray, true: np.ndarray) -> np.ndarray | None:
    """The classes to explain per image for ``explain.classes`` (a key of
    ``common.registry.CLASS_SELECTIONS``): int (N, 1) predicted; (N, 2) predicted, then the
    true class where it differs (-1 where the prediction is right); None for every class.

    Raises:
        ValueError: an unknown selection, or predicted and true of different lengths.
    """
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    true = np.asarray(true, dtype=np.int64).ravel()
    if predicted.shape != true.shape:
        raise ValueError(f"{len(predicted)} predicted classes but {len(true)} true ones")
    if selection == "all":
        return None
    if selection == "predicted":
        return predicted[:, None]
    if selection == "predicted+true":
        return np.stack([predicted, np.where(true != predicted, true, -1)], axis=1)
    raise ValueError(f"unknown class selection {selection!r}; known: all, predicted, predicted+true")
