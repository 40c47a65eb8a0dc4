"""What every Keras model of the study shares: its logits as a model of their own, and traced
inference functions.

Both networks (the published CNN, ``cnn.py``, and ResNet50 with the published head,
``resnet50.py``) take raw RGB pixels (0..255, NHWC), carry their own preprocessing as their first
layer, name their last linear layer ``"logits"`` and end in a ``Softmax`` layer: the saved model is
the probability model, and the views here share its layers.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def logits_model(model: keras.Model) -> keras.Model:
    """Pixels → logits, sharing ``model``'s layers (the model the explainers see)."""
    return keras.Model(model.input, model.get_layer("logits").output, name=f"{model.name}_logits")


def predictor(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` in inference mode as one traced function for every batch size.

    ``predict_on_batch`` traces a new graph for each new batch shape (seconds for
    ResNet50); a batch dimension of ``None`` in the signature needs a single trace.
    A model with several outputs gives a tuple of arrays.
    """
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    fn = tf.function(_Inference(model), input_signature=[spec])

    def predict(x: np.ndarray):
        y = fn(tf.convert_to_tensor(x, dtype=tf.float32))
        return tuple(t.numpy() for t in y) if isinstance(y, (list, tuple)) else y.numpy()

    return predict


def outputs_predictor(model: keras.Model) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``x -> (logits, probabilities)`` of the full ``model`` in inference mode, one forward pass
    and one trace for both: the arm's predictions and every explainer's outputs, base values and
    probabilities share it (each extra trace of ResNet50 costs seconds)."""
    both = keras.Model(model.inputs, [model.get_layer("logits").output, model.output], name=f"{model.name}_outputs")
    return predictor(both)


class _Inference:
    """``model(x, training=False)`` as a callable object rather than a function: TensorFlow
    counts traces per function code object, and one code object shared by many models'
    predictors would trip its "excessive retracing" warning."""

    def __init__(self, model: keras.Model):
        self.model = model
        # The views shap explains take a list (shap calls models with one); match the
        # structure the model was built with, or Keras warns.
        self.list_input = isinstance(model.input, (list, tuple))

    def __call__(self, x):
        return self.model([x] if self.list_input else x, training=False)
