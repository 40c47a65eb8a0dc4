"""Tolerances for float comparisons, derived from the dtype and the computation.

Two evaluations of the same float32 quantity differ where a reduction (a sum, a dot
product, a convolution, a matrix product) adds its terms in another order: another batch
composition, another kernel (oneDNN and BLAS pick theirs by CPU and shape), vector lanes,
fused multiply-adds. Elementwise operations are correctly rounded and agree everywhere.

The bound used throughout (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
§3.1): a floating-point sum of ``n`` terms lies within ``gamma(n) * sum |terms|`` of the exact
sum, whatever order and grouping it adds them in, with ``gamma(n) = n u / (1 - n u)`` and
``u`` the unit roundoff (2**-24 for float32). Two evaluations then lie within twice that of
each other. A tolerance built here is a bound, not what one CPU happened to give.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def unit_roundoff(dtype: type = np.float32) -> float:
    """Half the machine epsilon: the largest relative error of one rounding."""
    return float(np.finfo(dtype).eps) / 2


def gamma(n_terms: int, dtype: type = np.float32) -> float:
    """Higham's gamma_n: the relative error bound of a sum of ``n_terms`` terms in ``dtype``."""
    nu = n_terms * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"{n_terms} terms are too many for a bound in {np.dtype(dtype).name}")
    return nu / (1 - nu)


def sum_atol(n_terms: int, magnitude, dtype: type = np.float32):
    """How far two evaluations of one sum of ``n_terms`` terms can lie apart, where the terms'
    absolute values add up to ``magnitude`` (for a dot product ``sum |w_i x_i|``; an array of
    magnitudes gives an array of bounds)."""
    return 2 * gamma(n_terms, dtype) * np.asarray(magnitude, dtype=np.float64)


def network_atol(fan_ins: Iterable[int], magnitude: float, dtype: type = np.float32) -> float:
    """The same for a network's outputs: each layer rounds sums over its fan-in, and to first
    order the layers' errors add, each on the scale of the outputs (``magnitude``, e.g. the
    largest absolute logit). ``fan_ins``: the terms of one output unit's sum in each layer
    (a convolution's kernel height x width x input channels, a dense layer's inputs)."""
    return sum(sum_atol(n, magnitude, dtype) for n in fan_ins)


def softmax_atol(logit_atol: float) -> float:
    """Probabilities computed from logits that lie within ``logit_atol`` of each other:
    ``d log p_k = dz_k - sum_j p_j dz_j``, so ``|dp_k| <= 2 logit_atol p_k <= 2 logit_atol``
    (to first order), plus the rounding of the softmax itself."""
    return 2 * float(logit_atol) + 8 * unit_roundoff()
