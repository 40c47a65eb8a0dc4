"""Keras arms of the study: ResNet50 (frozen, ImageNet weights) with the published head
(``resnet50.py``, arm ``resnet50_arm.py``, trained by ``transfer.py``; ``weights.py`` resolves the
backbone weights: ImageNet, a local file or random) and the published CNN (``cnn.py``, arm
``cnn_arm.py``), with what both arms share (``model.py``, ``train.py``, ``explain.py``, ``arm.py``).
Files mirror ``pytorch_impl/``; ``twin.py`` is the PyTorch CNN rebuilt with PyTorch's weights.

Importing this package sets TensorFlow's environment (only where the user has not set
it), so it must come before anything imports ``keras`` or ``tensorflow``:

- ``KERAS_BACKEND=tensorflow``: Keras 3 picks its backend once, at import;
- ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow 2.21 turns its oneDNN kernels on by itself
  only on CPUs with newer instruction sets; where it leaves them off, turning them on makes
  ResNet50's forward+backward pass (what both SHAP explainers run) much faster (measured
  figures: benchmarks/BENCHMARKS.md, ``python -m benchmarks.keras_pass_bench``). Results
  differ from the Eigen kernels' only in float rounding. Set ``TF_ENABLE_ONEDNN_OPTS=0`` to compare;
- ``TF_CPP_MIN_LOG_LEVEL=2``: TensorFlow's C++ start-up chatter off.
"""

import os

TENSORFLOW_ENV = {"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
for _name, _value in TENSORFLOW_ENV.items():
    os.environ.setdefault(_name, _value)


def onednn_enabled() -> bool | None:
    """Whether the loaded TensorFlow runs its oneDNN kernels (None if it cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only switch TF reports
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())
