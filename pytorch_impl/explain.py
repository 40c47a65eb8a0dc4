"""Deep SHAP and Gradient SHAP maps of a PyTorch model (the CNN or ResNet50), in the framework-neutral layout.

shap 0.51 returns one array ``(N, C, H, W, K)`` for an NCHW model with K outputs (class
axis last); :func:`shap_to_explanation_layout` turns it into the study's float32
``(N, K, H, W, C)``. Both explainers work on a copy of the model in eval mode (BatchNorm
uses its running statistics), so the caller's model is never touched by shap's hooks.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from common.explanation import ExplainerOutput
from pytorch_impl.model import as_input, images_to_tensor, with_probability_head

# Leaf modules of the models that shap's PyTorch Deep SHAP does not know and that are affine (the
# CNN's normalisation, ResNet50's preprocessing): its plain gradient through them is exact.
AFFINE_LEAVES = ("Normalize", "ResNet50Preprocess")


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
    seeds: np.ndarray,
    output: str = "logits",
    batch_size: int = 50,
    deep_dtype: torch.dtype = torch.float32,
    classes: np.ndarray | None = None,
) -> ExplainerOutput:
    """Explain every class of ``model`` (or ``classes[i]`` for image i) for ``images`` against ``background``.

    Called by :meth:`PyTorchArm.explain` (which checks, seeds, times and packages); shap reseeds NumPy here.

    Args:
        model: the logit-output model (raw-pixel NCHW input); explained on its device.
        images: uint8 (N, H, W, C) images to explain.
        background: uint8 (B, H, W, C) reference images.
        method: ``"deep"`` (shap.DeepExplainer) or ``"gradient"`` (shap.GradientExplainer).
        nsamples: Gradient SHAP samples per image (ignored by Deep SHAP).
        seeds: uint32 (N,): Gradient SHAP's ``rseed`` for each image (one call per image), so
            an image's map is the same whichever images and classes are explained with it.
        output: ``"logits"`` or ``"probability"`` (a softmax module after the logits).
        batch_size: Gradient SHAP samples per forward/backward pass.
        deep_dtype: precision of Deep SHAP's model copy (the study reports the additivity error
            float32 gives); Gradient SHAP runs in float32 (shap's sample batches' dtype).
        classes: int (N,): explain only ``classes[i]`` for image i (images are grouped by
            class; each group is explained through a one-hot ``nn.Linear`` after the output,
            which both explainers treat as the linear layer it is); None: every class.

    Returns:
        The attributions (N, K, H, W, C) (or (N, 1, H, W, C) with ``classes``), base
        values, outputs and probabilities. The caller's model is not changed.
    """
    device = next(model.parameters()).device
    dtype = deep_dtype if method == "deep" else torch.float32
    explained = explained_copy(model, output, dtype)
    x = as_input(images_to_tensor(images, device), dtype)  # (N, C, H, W) raw pixels
    bg = as_input(images_to_tensor(background, device), dtype)  # (B, C, H, W)
    with torch.no_grad():
        outputs = explained(x).cpu().numpy()  # (N, K) of the explained quantity
        base_values = explained(bg).mean(0).cpu().numpy()  # E[f(background)]: Deep SHAP's expected_value
    # The model's probabilities, as predict_proba gives them (the explained copy is in eval mode).
    probabilities = outputs if output == "probability" else torch.softmax(torch.from_numpy(outputs), 1).numpy()
    seeds = np.asarray(seeds)
    if classes is None:
        values = _shap_values(_explainer(explained, bg, method, batch_size), x, method, nsamples, seeds)
    else:
        values = _class_values(
            explained, x, bg, method, nsamples, seeds, batch_size, np.asarray(classes, np.int64), outputs.shape[1]
        )
    return ExplainerOutput(
        attributions=shap_to_explanation_layout(values),
        base_values=base_values,
        outputs=outputs,
        probabilities=probabilities,
    )


def explained_copy(model: nn.Module, output: str = "logits", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A private copy of ``model`` in eval mode (BatchNorm uses its running statistics) that
    gives ``output``, with gradients off for its parameters (they are taken w.r.t. the inputs).
    The explainers work on it: shap's hooks leave Parameters on the leaves, and the caller's
    model is never touched."""
    explained: nn.Module = copy.deepcopy(model).to(dtype)
    if output == "probability":
        explained = with_probability_head(explained)
    return explained.eval().requires_grad_(False)


def _class_values(
    explained: nn.Module,
    x: torch.Tensor,
    bg: torch.Tensor,
    method: str,
    nsamples: int,
    seeds: np.ndarray,
    batch_size: int,
    classes: np.ndarray,
    n_classes: int,
) -> np.ndarray:
    """shap's values (N, C, H, W, 1) of ``classes[i]`` for image i, the images grouped by class.

    One explainer serves every class: a one-hot layer after the output whose row is set per
    class (as the Keras arm assigns its one-hot kernel), so its set-up runs once.
    """
    device, dtype = x.device, x.dtype
    select = select_class(n_classes, 0).to(device, dtype)
    explainer = _explainer(nn.Sequential(explained, select), bg, method, batch_size)
    values = np.zeros((len(x), x.shape[1], x.shape[2], x.shape[3], 1), np.float32)
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        with torch.no_grad():
            select.weight.zero_()
            select.weight[0, c] = 1.0
        group = x[torch.as_tensor(rows, device=device)]
        values[rows] = _shap_values(explainer, group, method, nsamples, seeds[rows])
    return values


def select_class(n_classes: int, c: int) -> nn.Linear:
    """A fixed ``nn.Linear(K, 1)`` that outputs the ``c``-th of K values (a one-hot row):
    linear, so Deep SHAP passes through it exactly."""
    layer = nn.Linear(n_classes, 1, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, c] = 1.0
    return layer.requires_grad_(False)


def _explainer(model: nn.Module, bg: torch.Tensor, method: str, batch_size: int):
    """shap's explainer of ``model`` (every output) against the background ``bg``."""
    # Imported here, not at the top: shap's import (1.6 s here: scikit-learn, SciPy, matplotlib)
    # is paid by a process that explains, not by one that only trains or predicts.
    import shap

    if method == "deep":
        return shap.DeepExplainer(model, bg)
    return shap.GradientExplainer(model, bg, batch_size=batch_size)


def _shap_values(explainer, x: torch.Tensor, method: str, nsamples: int, seeds: np.ndarray) -> np.ndarray:
    """shap 0.51's ``(N, C, H, W, K)`` values of the explainer's model for ``x``."""
    if method == "deep":
        with warnings.catch_warnings():
            # The models' preprocessing layers are affine, so shap's fallback (the plain gradient) is exact for them.
            warnings.filterwarnings("ignore", message=f"unrecognized nn.Module: ({'|'.join(AFFINE_LEAVES)})$")
            # The study measures additivity itself (Explanation.additivity_errors); shap's
            # own check only raises, at a loose 1e-2, and would lose the result.
            return np.asarray(explainer.shap_values(x, check_additivity=False))
    # One call per image with its own seed: shap draws image by image from one stream per call.
    return np.concatenate(
        [np.asarray(explainer.shap_values(x[i : i + 1], nsamples=nsamples, rseed=int(seeds[i]))) for i in range(len(x))]
    )


def gradients(
    model: nn.Module, images: np.ndarray, classes: np.ndarray, *, output: str = "logits", batch_size: int = 64
):
    """d f_c(x)/d x for raw uint8 ``images`` (N, H, W, C), c = ``classes[i]``, as float32
    (N, H, W, C), and the explained outputs f(x) (N, K); on a copy of the model in eval mode."""
    device = next(model.parameters()).device
    explained = explained_copy(model, output)
    grads, outputs = [], []
    tensor = images_to_tensor(images, device)
    for i in range(0, len(images), batch_size):
        x = as_input(tensor[i : i + batch_size]).requires_grad_(True)
        y = explained(x)
        c = torch.as_tensor(classes[i : i + batch_size], device=device)
        (g,) = torch.autograd.grad(y.gather(1, c[:, None]).sum(), x)
        grads.append(g.permute(0, 2, 3, 1).cpu().numpy())  # NCHW -> NHWC
        outputs.append(y.detach().cpu().numpy())
    return np.concatenate(grads).astype(np.float32), np.concatenate(outputs)


def captum_explain(
    model: nn.Module,
    images: np.ndarray,
    background: np.ndarray,
    method: str,
    *,
    nsamples: int,
    seed: int,
    classes: np.ndarray,
) -> ExplainerOutput | None:
    """The same estimators from Captum, an independent implementation, for a cross-check
    of shap's maps (logits, ``classes[i]`` for image i): ``DeepLiftShap`` (DeepLIFT's
    rescale rule averaged over the background, which is what shap's Deep SHAP computes) and
    ``GradientShap`` with ``stdevs=0`` (expected gradients, as shap's GradientExplainer;
    Monte Carlo, so its draws differ from shap's). None for any other method.
    """
    from captum.attr import DeepLiftShap, GradientShap

    if method not in ("deep", "gradient"):
        return None
    device = next(model.parameters()).device
    explained = explained_copy(model)
    x = as_input(images_to_tensor(images, device))
    bg = as_input(images_to_tensor(background, device))
    target = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=device)
    with torch.no_grad():
        outputs = explained(x).cpu().numpy()
        base_values = explained(bg).mean(0).cpu().numpy()
    if method == "deep":
        with warnings.catch_warnings():  # it says it sets hooks on the (private) copy's activations
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            values = DeepLiftShap(explained).attribute(x.clone().requires_grad_(True), baselines=bg, target=target)
    else:
        torch.manual_seed(seed)
        values = GradientShap(explained).attribute(
            x.clone().requires_grad_(True), baselines=bg, target=target, n_samples=nsamples, stdevs=0.0
        )
    maps = values.detach().permute(0, 2, 3, 1).cpu().numpy()[:, None]  # (N, 1, H, W, C)
    probabilities = torch.softmax(torch.from_numpy(outputs), 1).numpy()
    return ExplainerOutput(attributions=maps, base_values=base_values, outputs=outputs, probabilities=probabilities)
