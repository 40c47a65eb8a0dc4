"""Seed every random number generator the study uses, in one place."""

from __future__ import annotations

import os
import random
import sys

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and, where already imported, PyTorch and Keras/TensorFlow.

    Frameworks are only seeded if the calling process has imported them, so the
    runner (which imports neither) stays light and each arm's process seeds its own.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)  # also seeds every CUDA device
    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)  # Python, NumPy and the backend
