"""A Keras 3 twin of the PyTorch arm's CNN, carrying the PyTorch weights.

What it is for: the two arms explain different models (a small CNN and a ResNet50), run
by different shap backends (``deep_pytorch.py`` hooks modules, ``deep_tf.py`` rewrites
TensorFlow gradients). Explaining the *same* network with the *same* weights in both
frameworks separates the two: if the twin's maps equal the PyTorch CNN's, any
difference between the arms' maps comes from the models, not from shap's two backends
(``tests/test_same_weights.py`` checks this).

Layer by layer it is ``pytorch_impl.cnn.CNN``: the layers of ``cnn.py`` (the Keras CNN arm's
own), with PyTorch's batch-norm epsilon and the PyTorch CNN's weights, normalisation statistics
included. The NCHW → NHWC change of the flatten order is done by permuting the first Dense
layer's weights rather than with a Transpose op in the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from keras_impl import cnn

BATCH_NORM_EPSILON = 1e-5  # PyTorch's BatchNorm2d default (Keras's is 1e-3)


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
    model = cnn.build_model(n_classes, image_size, batch_norm_epsilon=BATCH_NORM_EPSILON, name="keras_twin_of_cnn")
    model.get_layer("normalize").set_statistics(sd["normalize.mean"], sd["normalize.std"])
    _carry_weights(model, sd, image_size)
    return model


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
