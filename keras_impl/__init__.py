"""The Keras arm: ResNet50 (frozen, ImageNet weights) with the published head.

Files mirror ``pytorch_impl/``: ``model.py`` (``build_model``), ``train.py``
(``train``), ``explain.py`` (``explain``) and ``arm.py`` (``KerasArm``); ``weights.py``
resolves the backbone weights (ImageNet, a local file or random).
"""

import os

# Keras 3 picks its backend once, at import: pin TensorFlow before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
