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
