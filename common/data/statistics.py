"""Per-channel statistics of uint8 images: what the CNN's first layer normalises with, in both frameworks."""

from __future__ import annotations

import numpy as np

from common.data.imagestore import ImageStore


def channel_statistics(images: np.ndarray | ImageStore, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of uint8 (N, H, W, C) images (an array or a
    store read ``chunk`` images at a time), float64.

    Exact integer sums over chunks of images, so no float copy of the whole set is made
    (a chunk's int64 copy: 38 MB for 32 images at 224 px).
    """
    n_channels = images.shape[-1]
    total, total_sq = [0] * n_channels, [0] * n_channels
    for i in range(0, len(images), chunk):
        block = images[i : i + chunk].reshape(-1, n_channels).astype(np.int64)
        for c, (s, ss) in enumerate(zip(block.sum(axis=0), (block * block).sum(axis=0), strict=True)):
            total[c] += int(s)
            total_sq[c] += int(ss)
    n = images.size // n_channels
    mean = np.array([t / n for t in total])
    var = np.array([(n * ss - t * t) / (n * n) for t, ss in zip(total, total_sq, strict=True)])  # exact numerator
    return mean, np.sqrt(var)
