"""Shared fixtures: one seed per test, quiet frameworks, and tiny image sets."""

from __future__ import annotations

import keras_impl  # noqa: F401  (TensorFlow's environment as the study sets it, before any test imports TensorFlow)

# The study never puts both frameworks in one process (each arm runs in its own), but
# pytest does. Loading TensorFlow first makes PyTorch segfault later, when torch.optim
# first imports torch._dynamo and with it triton (seen with tensorflow-cpu 2.21 and
# torch 2.14.1); loading torch._dynamo first lets both live in one test process.
try:
    import torch._dynamo  # noqa: F401
except ImportError:  # PyTorch not installed: only the Keras tests can run
    pass

import numpy as np
import pytest

from common.seeding import seed_everything


@pytest.fixture(autouse=True)
def _seed():
    seed_everything(0)


@pytest.fixture
def tiny_images():
    """A learnable 3-class set of 32x32 uint8 RGB images: a bright square whose
    position (left, centre, right) is the class, on a noisy background."""

    def make(n_per_class: int = 10, size: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for label in range(3):
            for _ in range(n_per_class):
                img = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
                s = size // 4
                x0 = [2, size // 2 - s // 2, size - s - 2][label]
                y0 = int(rng.integers(2, size - s - 2))
                img[y0 : y0 + s, x0 : x0 + s, label] = 255
                xs.append(img)
                ys.append(label)
        return np.stack(xs), np.array(ys, dtype=np.int64)

    return make


@pytest.fixture
def image_folder():
    """Write a ``train/`` + ``test/`` folder of small learnable PNGs (a bright square whose
    position is the class) and a ``.DS_Store``; returns a function ``(root, classes, n_train,
    n_test, size) -> root``."""
    from PIL import Image

    def make(root, classes=("ants", "bees", "wasps"), n_train=10, n_test=4, size=32):
        rng = np.random.default_rng(0)
        for split, n in (("train", n_train), ("test", n_test)):
            for k, cls in enumerate(classes):
                for i in range(n):
                    img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                    s = size // 4
                    x0 = [2, size // 2 - s // 2, size - s - 2][k % 3]
                    y0 = int(rng.integers(2, size - s - 2))
                    img[y0 : y0 + s, x0 : x0 + s, k % 3] = 255
                    p = root / split / cls / f"{i:02d}.png"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(p)
        (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        return root

    return make
