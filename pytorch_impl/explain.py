"""Deep SHAP and Gradient SHAP maps of the CNN, in the framework-neutral layout.

shap 0.51 returns one array ``(N, C, H, W, K)`` for an NCHW model with K outputs (class
axis last); :func:`shap_to_explanation_layout` turns it into the study's float32
``(N, K, H, W, C)``. Both explainers work on a copy of the model in eval mode (BatchNorm
uses its running statistics), so the caller's model is never touched by shap's hooks.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import shap
import torch
from torch import nn

from common.arm import Attribution
from pytorch_impl.model import as_input, images_to_tensor, with_probability_head


def shap_to_explanation_layout(values: np.ndarray) -> np.ndarray:
    """shap 0.51's ``(N, C, H, W, K)`` array → float32 ``(N, K, H, W, C)``.

    Raises:
        TypeError: if ``values`` is not one array (older shap returned a list per class).
        ValueError: if it does not have five axes.
    """
    if not isinstance(values, np.ndarray):
        raise TypeError(f"expected one (N, C, H, W, K) array from shap 0.51, got {type(values).__name__}")
    if values.ndim != 5:
        raise ValueError(f"expected an (N, C, H, W, K) array, got shape {values.shape}")
    return np.ascontiguousarray(values.transpose(0, 4, 2, 3, 1), dtype=np.float32)


def explain(
    model: nn.Module,
    images: np.ndarray,
    background: np.ndarray,
    method: str,
    *,
    nsamples: int,
    seed: int,
    output: str = "logits",
    batch_size: int = 50,
    deep_dtype: torch.dtype = torch.float32,
) -> Attribution:
    """Explain every class of ``model`` for ``images`` against ``background``.

    Called by :meth:`PyTorchArm.explain`, which checks the inputs, seeds, times and packages
    the result; shap reseeds NumPy's global generator here (``rseed``).

    Args:
        model: the logit-output CNN (raw-pixel NCHW input); explained on its device.
        images: uint8 (N, H, W, C) images to explain.
        background: uint8 (B, H, W, C) reference images.
        method: ``"deep"`` (shap.DeepExplainer) or ``"gradient"`` (shap.GradientExplainer).
        nsamples: Gradient SHAP samples per image (ignored by Deep SHAP).
        seed: Gradient SHAP's ``rseed``, so reruns give the same maps.
        output: ``"logits"`` or ``"probability"`` (a softmax module after the logits).
        batch_size: Gradient SHAP samples per forward/backward pass.
        deep_dtype: precision of the model copy Deep SHAP runs on (float32 by default; the
            study measures and reports the additivity error it gives). Gradient SHAP always
            runs in float32 (shap builds its sample batches in the default dtype).

    Returns:
        The attributions (N, K, H, W, C), base values, outputs and probabilities.
    """
    device = next(model.parameters()).device
    dtype = deep_dtype if method == "deep" else torch.float32

    # A private copy: shap's hooks leave Parameters on the leaves, and DeepExplainer calls
    # .eval() itself; set eval here too so both explainers see BatchNorm's running stats.
    explained: nn.Module = copy.deepcopy(model).to(dtype)
    if output == "probability":
        explained = with_probability_head(explained)
    explained.eval().requires_grad_(False)  # gradients are taken w.r.t. the inputs only

    x = as_input(images_to_tensor(images, device), dtype)  # (N, C, H, W) raw pixels
    bg = as_input(images_to_tensor(background, device), dtype)  # (B, C, H, W)

    if method == "deep":
        with warnings.catch_warnings():
            # Normalize is affine, so shap's fallback (the plain gradient) is exact for it.
            warnings.filterwarnings("ignore", message="unrecognized nn.Module: Normalize")
            explainer = shap.DeepExplainer(explained, bg)
            # The study measures additivity itself (Explanation.additivity_errors); shap's
            # own check only raises, at a loose 1e-2, and would lose the result.
            values = explainer.shap_values(x, check_additivity=False)
        base_values = np.asarray(explainer.expected_value)
    else:
        explainer = shap.GradientExplainer(explained, bg, batch_size=batch_size)
        values = explainer.shap_values(x, nsamples=nsamples, rseed=seed)
        with torch.no_grad():
            base_values = explained(bg).mean(0).cpu().numpy()  # no expected_value here

    with torch.no_grad():
        outputs = explained(x).cpu().numpy()  # (N, K) of the explained quantity
        model.eval()
        probabilities = torch.softmax(model(as_input(x)), dim=1).cpu().numpy()  # as predict_proba
    return Attribution(
        attributions=shap_to_explanation_layout(values),
        base_values=base_values,
        outputs=outputs,
        probabilities=probabilities,
    )
