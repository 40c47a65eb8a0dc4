"""Seed every random number generator the study uses, in one place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from collections.abc import Iterator

import numpy as np


def seed_everything(seed: int, *, tensorflow: bool = True) -> None:
    """Seed Python, NumPy and, where already imported, PyTorch and Keras/TensorFlow.

    Frameworks are only seeded if the calling process has imported them, so the
    runner (which imports neither) stays light and each arm's process seeds its own.

    Args:
        tensorflow: also reset Keras's and TensorFlow's seeds. ``tf.random.set_seed`` clears
            TensorFlow's kernel cache, so every traced graph builds its kernels again on its
            next call (measured on the default study's ResNet50: about 0.3 s per forward graph
            and 0.6 s per gradient graph, per call after a reset). Leave it out where no
            TensorFlow random op runs, as when explaining (the explainers draw from NumPy).
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)  # also seeds every CUDA device
    if tensorflow and "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)  # Python, NumPy and the backend


@contextlib.contextmanager
def seeded(seed: int, *, tensorflow: bool = True) -> Iterator[None]:
    """Seed everything for the block, then give Python's and NumPy's global generators
    back the state they had (libraries such as shap reseed NumPy's generator).
    ``tensorflow``: as in :func:`seed_everything`."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    seed_everything(seed, tensorflow=tensorflow)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def image_seeds(seed: int, images: np.ndarray) -> np.ndarray:
    """One uint32 seed per image (N, ...) from ``seed`` and the image's own pixels.

    A sampled explainer (Gradient SHAP) drawn with these gives each image's map from the
    image, its class, the model and ``seed`` alone: not from which other images are
    explained in the same call or in which order, so the maps of a run that explains only
    some classes or images equal the corresponding maps of a run that explains them all.
    """
    images = np.ascontiguousarray(images)
    seeds = np.empty(len(images), np.uint32)
    for i, image in enumerate(images):
        digest = hashlib.blake2b(image.tobytes(), digest_size=8).digest()
        seeds[i] = np.random.SeedSequence([seed, int.from_bytes(digest, "little")]).generate_state(1)[0]
    return seeds
