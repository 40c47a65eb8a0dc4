"""A Keras 3 twin of the PyTorch arm's CNN, carrying the PyTorch weights.

What it is for: the two arms explain different models (a small CNN and a ResNet50), run
by different shap backends (``deep_pytorch.py`` hooks modules, ``deep_tf.py`` rewrites
TensorFlow gradients). Explaining the *same* network with the *same* weights in both
frameworks separates the two: if the twin's maps equal the PyTorch CNN's, any
difference between the arms' maps comes from the models, not from shap's two backends
(``tests/test_same_weights.py`` checks this).

Layer by layer it is ``pytorch_impl.model.CNN``: ``(x - mean) / std`` on raw pixels →
Conv(3→6, 5) → MaxPool(2) → BatchNorm → ReLU → Conv(6→16, 3) → MaxPool(2) → BatchNorm →
ReLU → Flatten → Dense(120) → ReLU → Dense(84) → ReLU → Dense(K) "logits" → Softmax
"probabilities", in NHWC (Keras's layout) instead of NCHW. Every op between pixels and
logits is one shap's TensorFlow Deep SHAP handles (Sub, RealDiv by constants, Conv2D,
BiasAdd, MaxPool, the affine batch-norm ops, Relu, Reshape, MatMul); the NCHW → NHWC
change of the flatten order is done by permuting the first Dense layer's weights rather
than with a Transpose op in the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
from keras import layers, ops

N_CHANNELS = 3  # RGB, as pytorch_impl.model (not imported: this module must not load PyTorch)
BATCH_NORM_EPSILON = 1e-5  # PyTorch's BatchNorm2d default (Keras's is 1e-3)


@keras.saving.register_keras_serializable(package="keras_impl")
class PixelNormalize(layers.Layer):
    """Per-channel ``(x - mean) / std`` on raw NHWC pixels, as ``pytorch_impl.model.Normalize``.

    The statistics are constants in the layer's config (so the layer serialises and the
    graph holds only Sub and RealDiv by constants: affine, exact under Deep SHAP).
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in np.ravel(mean)]
        self.std = [float(s) if s > 0 else 1.0 for s in np.ravel(std)]  # as Normalize.set_statistics

    def call(self, x):  # (B, H, W, C) raw pixels
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std  # (B, H, W, C) normalised

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def keras_twin_of_cnn(state_dict: Mapping[str, np.ndarray], n_classes: int, image_size: int) -> keras.Model:
    """The PyTorch CNN rebuilt in Keras 3 with the weights of ``state_dict``.

    Args:
        state_dict: ``CNN.state_dict()`` as NumPy arrays (keys ``"normalize.mean"``,
            ``"features.0.weight"``, ``"features.2.running_mean"``,
            ``"classifier.0.weight"``, ...).
        n_classes: number of classes K (rows of ``"classifier.4.weight"``).
        image_size: square input side the CNN was built for.

    Returns:
        A Functional model ``pixels (B, S, S, 3) float32 in [0, 255] -> probabilities (B, K)``
        whose layer ``"logits"`` gives the CNN's logits (what the explainers see), so
        ``keras_impl.explain.explain`` works on it.

    Raises:
        KeyError: a weight missing from ``state_dict``.
        ValueError: weights whose shapes do not fit ``n_classes`` and ``image_size``.
    """
    sd = {key: np.asarray(value, dtype=np.float32) for key, value in state_dict.items()}
    model = _cnn_layers(n_classes, image_size, sd["normalize.mean"], sd["normalize.std"])
    _carry_weights(model, sd, image_size)
    return model


def _cnn_layers(n_classes: int, image_size: int, mean: np.ndarray, std: np.ndarray) -> keras.Model:
    """The CNN's layers in Keras, NHWC, named for :func:`_carry_weights`."""
    pixels = keras.Input((image_size, image_size, N_CHANNELS), name="pixels")  # raw RGB 0..255
    x = PixelNormalize(mean, std, name="normalize")(pixels)
    x = layers.Conv2D(6, 5, name="conv1")(x)  # (B, S-4, S-4, 6)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(16, 3, name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)  # (B, side, side, 16)
    x = layers.Flatten(name="flatten")(x)  # (B, side * side * 16) in (H, W, C) order
    x = layers.Dense(120, name="fc1")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.Dense(84, name="fc2")(x)
    x = layers.ReLU(name="relu4")(x)
    logits = layers.Dense(n_classes, name="logits")(x)
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(pixels, probabilities, name="keras_twin_of_cnn")


def _carry_weights(model: keras.Model, sd: Mapping[str, np.ndarray], image_size: int) -> None:
    """Set the twin's weights from the CNN's state dict (float32 NumPy arrays), in Keras's layouts."""

    def conv(key: str) -> list[np.ndarray]:  # PyTorch OIHW -> Keras HWIO
        return [sd[f"{key}.weight"].transpose(2, 3, 1, 0), sd[f"{key}.bias"]]

    def batch_norm(key: str) -> list[np.ndarray]:  # inference mode: the running statistics
        return [sd[f"{key}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]

    def dense(key: str) -> list[np.ndarray]:  # PyTorch (out, in) -> Keras (in, out)
        return [sd[f"{key}.weight"].T, sd[f"{key}.bias"]]

    # PyTorch flattens (C, H, W), Keras (H, W, C): reorder the first Linear layer's input
    # columns so that column (h, w, c) of the Keras kernel is column (c, h, w) of PyTorch's.
    side = model.get_layer("relu2").output.shape[1]  # feature map (B, side, side, 16)
    fc1 = sd["classifier.0.weight"]  # (120, 16 * side * side), columns in (C, H, W) order
    if fc1.shape[1] != 16 * side * side:
        raise ValueError(f"classifier.0.weight has {fc1.shape[1]} inputs; image_size {image_size} gives {16 * side**2}")
    fc1_kernel = fc1.reshape(-1, 16, side, side).transpose(2, 3, 1, 0).reshape(side * side * 16, -1)

    model.get_layer("conv1").set_weights(conv("features.0"))
    model.get_layer("bn1").set_weights(batch_norm("features.2"))
    model.get_layer("conv2").set_weights(conv("features.4"))
    model.get_layer("bn2").set_weights(batch_norm("features.6"))
    model.get_layer("fc1").set_weights([fc1_kernel, sd["classifier.0.bias"]])
    model.get_layer("fc2").set_weights(dense("classifier.2"))
    model.get_layer("logits").set_weights(dense("classifier.4"))  # set_weights raises on a wrong K
