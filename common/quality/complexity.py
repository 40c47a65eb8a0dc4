"""Sparseness of a map: the Gini index of its absolute values (Hurley & Rickard 2009)."""

from __future__ import annotations

import numpy as np


def gini(maps: np.ndarray) -> np.ndarray:
    """Gini index of each map's absolute values (Hurley & Rickard 2009), as Quantus's ``Sparseness``.

    With the n values of ``|map|`` sorted ascending, x_1 <= ... <= x_n:
    ``G = sum_i (2i - n - 1) x_i / (n sum_i x_i)``; 0 for a constant map, (n-1)/n for a
    map with one non-zero element. (Quantus adds 1e-7 to every value first; this does not.)

    Args:
        maps: ``(N, ...)``, flattened per image.

    Returns:
        float64 ``(N,)``; NaN for a map that is all zeros.

    Raises:
        ValueError: when ``maps`` has no image axis.
    """
    maps = np.asarray(maps)
    if maps.ndim < 1:
        raise ValueError("maps must be (N, ...)")
    x = np.sort(np.abs(maps.reshape(maps.shape[0], -1).astype(np.float64)), axis=1)  # (N, n)
    n = x.shape[1]
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    total = x.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (x * weights).sum(axis=1) / (n * total)
    g[total == 0] = np.nan
    return g
