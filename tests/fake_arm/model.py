"""Logits = W · (pixels / 255) + b: a model whose exact SHAP values are known."""

from __future__ import annotations

import numpy as np


def logits(weights: np.ndarray, bias: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(N, K) logits of uint8 (N, H, W, C) images for weights (K, H*W*C) and bias (K,)."""
    return (images.reshape(len(images), -1) / 255.0) @ weights.T + bias


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
