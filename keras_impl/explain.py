"""Deep SHAP and Gradient SHAP on the Keras model, in the common attribution layout.

Both explainers see the full pixel-input model (``ResNet50Preprocess`` is its first
layer), and by default its logits: softmax is handled differently by the two
frameworks' Deep SHAP, so logits are the quantity the arms share.

shap 0.51 returns one array ``(N, H, W, C, K)`` for a Keras (NHWC) model with K
outputs; :func:`explain` moves the class axis to ``(N, K, H, W, C)``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common.explanation import ExplainerOutput
from common.registry import OUTPUTS, method_spec
from keras_impl import model as km


def explained_model(model: keras.Model, output: str) -> keras.Model:
    """The model whose outputs are explained: pixels → logits, or → probabilities.

    A view sharing ``model``'s layers whose input is a one-element list: shap calls the
    model with a list, and Keras warns when the structure differs from the built one.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    out = model.get_layer("logits").output if output == "logits" else model.output
    return keras.Model(model.inputs, out, name=f"{model.name}_{output}")


@dataclass
class BuiltExplainer:
    """A shap explainer together with the model it explains and its background."""

    method: str  # "deep" or "gradient"
    output: str  # "logits" or "probability"
    background: np.ndarray  # float32 (B, H, W, C) pixels, 0..255
    shap_explainer: Any  # shap.DeepExplainer or shap.GradientExplainer
    setup_seconds: float
    # x -> (logits, probabilities) of the full model, traced once (km.outputs_predictor; the arm's own)
    predict_outputs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    select: keras.layers.Dense | None = None  # one-class explainers: the fixed one-hot layer after the output

    def outputs(self, x: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """f(x) of the explained output (N, K), E[f(background)] (K,) and the probabilities
        (N, K), from the model's current weights in one batched forward pass over both."""
        logits, probabilities = _batched(self.predict_outputs, np.concatenate([x, background]))
        target = probabilities if self.output == "probability" else logits
        return target[: len(x)], target[len(x) :].mean(0), probabilities[: len(x)]

    def select_class(self, c: int) -> None:
        """Point a one-class explainer at class ``c`` (assigns the one-hot kernel: the traced
        graphs read the variable, so nothing is rebuilt)."""
        kernel = np.zeros(self.select.kernel.shape, np.float32)
        kernel[c, 0] = 1.0
        self.select.kernel.assign(kernel)


def make_explainer(
    model: keras.Model,
    background: np.ndarray,
    method: str,
    *,
    output: str = "logits",
    batch_size: int = 50,
    one_class: bool = False,
    predict_outputs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> BuiltExplainer:
    """A shap explainer for ``model``'s ``output`` against ``background``; build it once and reuse it.

    TensorFlow builds one gradient graph per explained class on first use, so reusing the
    explainer across images and calls saves that cost.

    Args:
        model: the full probability model.
        background: uint8 or float (B, H, W, C) pixels, 0..255.
        method: "deep" (shap.DeepExplainer) or "gradient" (shap.GradientExplainer).
        output: "logits" or "probability".
        batch_size: Gradient SHAP samples per forward/backward pass.
        one_class: explain one class per call, chosen with ``select_class``: a fixed
            one-hot ``Dense(1)`` (a MatMul, linear for Deep SHAP) after the output, whose
            kernel is assigned per class, so one set of graphs serves every class.
        predict_outputs: ``model``'s :func:`keras_impl.model.outputs_predictor` (the arm
            passes its own, so its trace is shared); None builds one.

    Raises:
        ValueError: unknown ``method`` or ``output``.
    """
    start = time.perf_counter()
    method_spec(method)  # raises ValueError for an unknown method
    target = explained_model(model, output)
    bg = np.asarray(background, dtype=np.float32)
    select = None
    explained = target
    if one_class:
        select = keras.layers.Dense(1, use_bias=False, trainable=False, name="select_class")
        explained = keras.Model(target.inputs, select(target.output), name=f"{target.name}_one_class")
    import shap  # here: only a process that explains pays for shap's import (as pytorch_impl.explain)

    with warnings.catch_warnings():
        # shap warns on every TF >= 2.4 that graph mode support was removed; eager mode is what runs here.
        warnings.filterwarnings("ignore", message="Your TensorFlow version is newer than 2.4.0")
        if method == "deep":
            explainer = shap.DeepExplainer(explained, bg)
        else:
            explainer = shap.GradientExplainer(explained, bg, batch_size=batch_size)
    predict_outputs = predict_outputs or km.outputs_predictor(model)
    return BuiltExplainer(method, output, bg, explainer, time.perf_counter() - start, predict_outputs, select)


def explain(
    model: keras.Model,
    images: np.ndarray,
    background: np.ndarray,
    method: str,
    *,
    nsamples: int,
    seeds: np.ndarray,
    output: str = "logits",
    batch_size: int = 50,
    explainer: BuiltExplainer | None = None,
    classes: np.ndarray | None = None,
) -> ExplainerOutput:
    """Explain every class of ``model`` (or ``classes[i]`` for image i) for ``images``.

    Called by :meth:`KerasArm.explain` (which checks, seeds, times and packages); shap reseeds NumPy here.

    Args:
        model: the full probability model (pixels → probabilities).
        images: uint8 (N, H, W, C) pixels to explain.
        background: uint8 (B, H, W, C) reference pixels.
        method: "deep" or "gradient".
        nsamples: Gradient SHAP samples per image (ignored by Deep SHAP).
        seeds: uint32 (N,): Gradient SHAP's ``rseed`` for each image (one call per image), so
            an image's map is the same whichever images and classes are explained with it.
        output: "logits" (default) or "probability".
        batch_size: Gradient SHAP samples per pass.
        explainer: one from :func:`make_explainer` for the same model, background,
            method and output (``one_class`` when ``classes`` is given), to reuse its
            graphs; ``None`` builds one.
        classes: int (N,): explain only ``classes[i]`` for image i; None: every class.

    Returns:
        Attributions (N, K, H, W, C) for all K classes (or (N, 1, H, W, C) with
        ``classes``); base values are E[f(background)], computed here from the model's
        current weights (the Deep explainer's ``expected_value`` is fixed when it is built, and
        a reused explainer may see other weights: :meth:`common.arm.Arm.randomized`).

    Raises:
        ValueError: an ``explainer`` built for another method, output or background.
    """
    x = np.asarray(images, dtype=np.float32)
    bg = np.asarray(background, dtype=np.float32)
    one_class = classes is not None
    if explainer is None:
        explainer = make_explainer(model, bg, method, output=output, batch_size=batch_size, one_class=one_class)
    elif (explainer.method, explainer.output, explainer.select is not None) != (method, output, one_class) or (
        not np.array_equal(explainer.background, bg)
    ):
        raise ValueError("explainer was built for another method, output, background or class selection")
    outputs, base_values, probabilities = explainer.outputs(x, bg)
    if one_class:
        attributions = _class_values(explainer, x, np.asarray(seeds), nsamples, np.asarray(classes, dtype=np.int64))
        return ExplainerOutput(attributions, base_values, outputs, probabilities)
    attributions = _shap_values(explainer, x, seeds, nsamples)
    if attributions.shape != (len(x), outputs.shape[1], *x.shape[1:]):
        raise RuntimeError(f"shap returned attributions {attributions.shape}; expected (N, K, H, W, C) for x {x.shape}")
    return ExplainerOutput(
        attributions=attributions, base_values=base_values, outputs=outputs, probabilities=probabilities
    )


def _class_values(
    explainer: BuiltExplainer, x: np.ndarray, seeds: np.ndarray, nsamples: int, classes: np.ndarray
) -> np.ndarray:
    """The maps (N, 1, H, W, C) of ``classes[i]`` for image i, the images grouped by class: a
    one-class explainer pointed at each class in turn (its graphs are built once)."""
    attributions = np.zeros((len(x), 1, *x.shape[1:]), np.float32)
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        explainer.select_class(int(c))
        attributions[rows] = _shap_values(explainer, x[rows], seeds[rows], nsamples)
    return attributions


def _shap_values(explainer: BuiltExplainer, x: np.ndarray, seeds: np.ndarray, nsamples: int) -> np.ndarray:
    """The explainer's maps of float32 pixels ``x``, as float32 (N, K, H, W, C)."""
    if explainer.method == "deep":
        # shap's own additivity check has an absolute tolerance of 1e-2 and raises;
        # the real error is measured from the result (Explanation.additivity_errors).
        return shap_to_explanation_layout(explainer.shap_explainer.shap_values(x, check_additivity=False))
    # One call per image with its own seed: shap draws image by image from one stream per call.
    return np.concatenate(
        [
            shap_to_explanation_layout(
                explainer.shap_explainer.shap_values(x[i : i + 1], nsamples=nsamples, rseed=int(seeds[i]))
            )
            for i in range(len(x))
        ]
    )


def shap_to_explanation_layout(values: np.ndarray) -> np.ndarray:
    """shap 0.51's Keras layout ``(N, H, W, C, K)`` → float32 ``(N, K, H, W, C)``.

    Raises:
        TypeError: if ``values`` is not one array (older shap returned a list per class).
        ValueError: if it does not have five axes.
    """
    if not isinstance(values, np.ndarray):
        raise TypeError(f"expected one (N, H, W, C, K) array from shap 0.51, got {type(values).__name__}")
    if values.ndim != 5:
        raise ValueError(f"expected an (N, H, W, C, K) array, got shape {values.shape}")
    return np.ascontiguousarray(np.moveaxis(values, -1, 1), dtype=np.float32)  # (N, K, H, W, C)


def _batched(predict: Callable, x: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, ...]:
    """``predict`` (x -> a tuple of arrays) over ``x`` in batches, each output concatenated as float32."""
    parts = [predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return tuple(np.concatenate(p).astype(np.float32) for p in zip(*parts, strict=True))


def gradient_function(model: keras.Model, output: str = "logits") -> Callable:
    """A traced ``(x, classes) -> (d f_c(x)/d x, f(x))`` of ``model``'s ``output`` in inference
    mode; build it once and reuse it (eager mode runs ResNet50's ops one by one, about 20x
    slower per call). It reads the model's variables, so it follows weights assigned later."""
    target = explained_model(model, output)
    # any batch size, one trace (a new batch size would otherwise trace ResNet50's gradient again)
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int32)]

    @tf.function(input_signature=signature)
    def grad(x: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = target([x], training=False)
            picked = tf.gather(y, c, axis=1, batch_dims=1)
        return tape.gradient(picked, x), y

    return grad


def gradients(
    model: keras.Model,
    images: np.ndarray,
    classes: np.ndarray,
    *,
    output: str = "logits",
    batch_size: int = 16,
    function: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """d f_c(x)/d x for raw pixels ``images`` (N, H, W, C), c = ``classes[i]``, as float32
    (N, H, W, C), and the explained outputs f(x) (N, K), in inference mode. ``function``: one
    from :func:`gradient_function` for the same model and output (None builds one)."""
    function = function or gradient_function(model, output)
    grads, outputs = [], []
    for i in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(np.asarray(images[i : i + batch_size], dtype=np.float32))
        c = tf.convert_to_tensor(np.asarray(classes[i : i + batch_size], dtype=np.int32))
        g, y = function(x, c)
        grads.append(g.numpy())
        outputs.append(y.numpy())
    return np.concatenate(grads).astype(np.float32), np.concatenate(outputs).astype(np.float32)
