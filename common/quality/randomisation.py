"""The model-randomisation check's weights (Adebayo et al. 2018): one rule for every framework."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def randomize_weights(weights: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Weights for the model-randomisation check (Adebayo et al. 2018): the one rule both arms use.

    The rule: each tensor, taken in the mapping's order at index ``j``, is replaced by
    draws from a normal distribution with that tensor's own mean and standard deviation
    (over its elements, ``ddof=0``), drawn from ``np.random.default_rng([seed, j])``, with
    the same shape and dtype. A tensor whose standard deviation is zero (constant, or a
    single element) stays as it was, and so does a non-floating one (an integer counter
    such as BatchNorm's ``num_batches_tracked``). Each tensor has its own stream, so a
    tensor's draws do not depend on the tensors before it.

    Args:
        weights: ``{name: array}``, e.g. a PyTorch ``state_dict`` or Keras weights as numpy.
        seed: the seed of the randomisation.

    Returns:
        ``{name: array}``: new arrays, same names, order, shapes and dtypes; the input is
        left as it was.
    """
    out: dict[str, np.ndarray] = {}
    for j, (name, tensor) in enumerate(weights.items()):
        arr = np.asarray(tensor)
        if arr.size == 0 or not np.issubdtype(arr.dtype, np.floating):
            out[name] = arr.copy()
            continue
        values = arr.astype(np.float64)
        mean, std = float(values.mean()), float(values.std())
        if std == 0.0:
            out[name] = arr.copy()
            continue
        out[name] = np.random.default_rng([seed, j]).normal(mean, std, size=arr.shape).astype(arr.dtype)
    return out


def input_only_maps(images: np.ndarray, background: np.ndarray, seed: int, draws: int, sigma: float) -> np.ndarray:
    """Maps that depend on the input alone: a smooth random field times (x - mean background).

    Every method of the study has the form "a gradient-like term times (x - background)", so
    |map| inherits |x - background| whatever the model. Replacing the model's gradient by a
    random field keeps exactly that part: two draws give the similarity two *unrelated*
    models' maps of these images would show, the reference (null) the sanity checks' figures
    are read against. The field is white Gaussian noise smoothed by a Gaussian of ``sigma``
    pixels per channel (model gradients are spatially correlated), seeded per draw.

    Args:
        images: uint8 ``(N, H, W, C)``; background: uint8 ``(B, H, W, C)``.
        seed, draws: the fields' seed and how many independent fields.

    Returns:
        float64 ``(draws, N, H, W)``: channel-summed maps.
    """
    from scipy import ndimage  # here: 0.2 s to import, and only the assess stage needs it

    offset = images.astype(np.float64) - background.astype(np.float64).mean(axis=0)  # (N, H, W, C)
    out = np.empty((draws, *offset.shape[:3]))
    for d in range(draws):
        noise = np.random.default_rng([seed, 11, d]).standard_normal(offset.shape)
        field = ndimage.gaussian_filter(noise, sigma=(0, sigma, sigma, 0))
        out[d] = (field * offset).sum(axis=-1)
    return out


def input_only_similarity(
    images: np.ndarray, background: np.ndarray, seed: int, *, draws: int = 8, sigma: float | None = None
) -> dict[str, np.ndarray]:
    """The null of the sanity checks, per image: how alike two maps of these images are when the
    models share nothing (:func:`input_only_maps`, ``draws`` fields in independent pairs).

    Returns:
        ``{"signed": ..., "abs": ..., "ssim": ...}``: float64 ``(N,)``, each the mean over the pairs
        of the Spearman correlation of the signed maps, of |map|, and SSIM. ``sigma`` defaults to
        1/16 of the image side.
    """
    from common.quality.agreement import nonzero_mask, rank_correlation, structural_similarity

    sigma = images.shape[1] / 16 if sigma is None else sigma
    maps = input_only_maps(images, background, seed, draws, sigma)
    pairs = [(maps[i], maps[i + 1]) for i in range(0, draws - 1, 2)]
    signed = [rank_correlation(a, b, mask=nonzero_mask(a, b)) for a, b in pairs]
    absolute = [rank_correlation(a, b, absolute=True, mask=nonzero_mask(a, b)) for a, b in pairs]
    ssim = [structural_similarity(a, b) for a, b in pairs]
    return {"signed": np.mean(signed, axis=0), "abs": np.mean(absolute, axis=0), "ssim": np.mean(ssim, axis=0)}
