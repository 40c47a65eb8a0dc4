"""Exact Deep SHAP and sampled Gradient SHAP of a linear model, in closed form."""

from __future__ import annotations

import numpy as np

from common.explanation import ExplainerOutput
from tests.fake_arm.model import logits, softmax


def explain(weights, bias, images, background, method: str, *, nsamples: int, seeds, classes=None) -> ExplainerOutput:
    """For logits W·x/255 + b, Deep SHAP is W ⊙ (x − mean(background))/255 exactly; Gradient
    SHAP averages W ⊙ (x − background[r])/255 over ``nsamples`` draws r seeded per image by ``seeds[i]``."""
    n, k = len(images), len(bias)
    x = images.reshape(n, -1) / 255.0
    bg = background.reshape(len(background), -1) / 255.0
    if method == "deep":
        reference = np.broadcast_to(bg.mean(0), x.shape)
    else:
        rows = np.stack([np.random.default_rng(s).integers(0, len(bg), size=nsamples) for s in seeds]).reshape(n, -1)
        reference = bg[rows].mean(1)  # (N, D)
    attributions = weights[None, :, :] * (x - reference)[:, None, :]  # (N, K, D)
    if classes is not None:  # only classes[i] for image i
        attributions = attributions[np.arange(n), classes][:, None]
        k = 1
    z = logits(weights, bias, images)
    return ExplainerOutput(
        attributions=attributions.reshape(n, k, *images.shape[1:]),
        base_values=logits(weights, bias, background).mean(0),
        outputs=z,
        probabilities=softmax(z),
    )


def gradients(weights, bias, images, classes) -> tuple[np.ndarray, np.ndarray]:
    """The constant gradient W[c]/255 of each image's class-c logit, (N, H, W, C), and the logits."""
    return (weights[classes] / 255.0).reshape(images.shape), logits(weights, bias, images)
