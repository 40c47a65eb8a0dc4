"""Seed every random number generator the study uses, in one place."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed everything for the block, then give Python's and NumPy's global generators
    back the state they had (libraries such as shap reseed NumPy's generator)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
