"""Full-batch gradient descent on the cross-entropy."""

from __future__ import annotations

import numpy as np

from common.arm import HISTORY_KEYS
from tests.fake_arm.model import logits, softmax


def _loss_accuracy(weights, bias, x, y) -> tuple[float, float]:
    p = softmax(logits(weights, bias, x))
    return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean()), float((p.argmax(1) == y).mean())


def train(weights, bias, x_train, y_train, x_val, y_val, *, epochs: int, lr: float) -> dict[str, list[float]]:
    """Train ``weights`` and ``bias`` in place; the history has every HISTORY_KEYS key."""
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    onehot = np.eye(len(bias))[y_train]
    flat = x_train.reshape(len(x_train), -1) / 255.0
    for _ in range(epochs):
        grad = (softmax(logits(weights, bias, x_train)) - onehot) / len(x_train)  # (N, K)
        weights -= lr * grad.T @ flat
        bias -= lr * grad.sum(0)
        for split, (x, y) in (("train", (x_train, y_train)), ("val", (x_val, y_val))):
            loss, acc = _loss_accuracy(weights, bias, x, y)
            history[f"{split}_loss"].append(loss)
            history[f"{split}_accuracy"].append(acc)
    return history
