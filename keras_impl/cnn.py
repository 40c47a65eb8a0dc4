"""The published CNN in Keras 3, taking raw pixels and normalising them as its first layer.

Layer by layer it is ``pytorch_impl.cnn.CNN`` in NHWC (Keras's layout): ``(x - mean) / std``
on raw pixels → Conv(3→6, 5) → MaxPool(2) → BatchNorm → ReLU → Conv(6→16, 3) → MaxPool(2) →
BatchNorm → ReLU → Flatten → Dense(120) → ReLU → Dense(84) → ReLU → Dense(K) "logits" →
Softmax "probabilities". Two models are built from it: the Keras CNN arm (``cnn_arm.py``),
with Keras's own defaults (initialisers, batch norm's momentum and epsilon), and the PyTorch
CNN's twin (``twin.py``), which carries PyTorch's weights and epsilon.

Every op between pixels and logits is one shap's TensorFlow Deep SHAP handles (Sub and RealDiv
by the normalisation's variables, Conv2D, BiasAdd, MaxPool, the affine batch-norm ops, Relu,
Reshape, MatMul). Keras flattens (H, W, C), PyTorch (C, H, W): a twin's first Dense kernel is
permuted to match (``twin.py``), rather than a Transpose put into the graph.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

N_CHANNELS = 3  # RGB, as pytorch_impl.model (not imported: this module must not load PyTorch)


@keras.saving.register_keras_serializable(package="keras_impl")
class PixelNormalize(layers.Layer):
    """Per-channel ``(x - mean) / std`` on raw NHWC pixels, as ``pytorch_impl.cnn.Normalize``.

    The statistics are non-trainable weights (saved with the model; set from the training split
    with :meth:`set_statistics`); they start as the identity (mean 0, std 1). Affine, so exact
    under Deep SHAP.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.mean = self.add_weight(name="mean", shape=(channels,), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(channels,), initializer="ones", trainable=False)

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store per-channel statistics (as float32); std values of 0 are replaced by 1."""
        std = np.where(np.asarray(std) > 0, std, 1.0)  # as pytorch_impl.cnn.Normalize.set_statistics
        self.mean.assign(np.asarray(mean, dtype=np.float32))
        self.std.assign(np.asarray(std, dtype=np.float32))

    def call(self, x):  # (B, H, W, C) raw pixels
        return (x - self.mean) / self.std  # (B, H, W, C) normalised

    def compute_output_shape(self, input_shape):
        return input_shape


def build_model(
    n_classes: int, image_size: int, *, batch_norm_epsilon: float | None = None, name: str = "cnn"
) -> keras.Model:
    """The CNN for ``n_classes`` and square ``image_size`` RGB images, with Keras's defaults.

    Args:
        batch_norm_epsilon: batch norm's epsilon; None: Keras's default (1e-3; PyTorch's is 1e-5).

    Returns:
        A Functional model ``pixels (B, S, S, 3) float32 in [0, 255] -> probabilities (B, K)``
        whose layers are named ``normalize``, ``conv1``, ``pool1``, ``bn1``, ``relu1``, ``conv2``,
        ``pool2``, ``bn2``, ``relu2``, ``flatten``, ``fc1``, ``relu3``, ``fc2``, ``relu4``,
        ``logits`` and ``probabilities``.
    """
    bn = {} if batch_norm_epsilon is None else {"epsilon": batch_norm_epsilon}
    pixels = keras.Input((image_size, image_size, N_CHANNELS), name="pixels")  # raw RGB 0..255
    x = PixelNormalize(name="normalize")(pixels)
    x = layers.Conv2D(6, 5, name="conv1")(x)  # (B, S-4, S-4, 6)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.BatchNormalization(name="bn1", **bn)(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(16, 3, name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.BatchNormalization(name="bn2", **bn)(x)
    x = layers.ReLU(name="relu2")(x)  # (B, side, side, 16)
    x = layers.Flatten(name="flatten")(x)  # (B, side * side * 16) in (H, W, C) order
    x = layers.Dense(120, name="fc1")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.Dense(84, name="fc2")(x)
    x = layers.ReLU(name="relu4")(x)
    logits = layers.Dense(n_classes, name="logits")(x)
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(pixels, probabilities, name=name)
