"""Shared fixtures: one seed per test, quiet frameworks, the small image sets, and one small study
(``small_study``, ``tests/small_study.py``) that the Python API, the notebook and the browser tests share.

The small image sets, all built here and nowhere else (every fixture is a factory, so a
test asks for the set it needs):

``tiny_images(n_per_class=10, size=32, seed=0, n_classes=3) -> (images, labels)``
    In memory: uint8 NHWC images and int64 labels, class by class.
``split_folders(root, *, classes=("ants", "bees", "wasps"), n_train=10, n_test=4,
held_out="test", size=32, fmt="png", pattern="square", seed=0, junk=False) -> root``
    On disk, the split-folder layout ``root/train/<class>/NN.<ext>`` and
    ``root/<held_out>/<class>/NN.<ext>`` (``held_out`` may be "test", "val", ...).
``class_folders(root, *, classes=("ants", "bees", "wasps"), n=10, size=32, fmt="png",
pattern="square", seed=0, junk=False) -> root``
    On disk, the class-folder layout ``root/<class>/NN.<ext>``; ``n`` is one count for
    every class or a ``{class: count}`` mapping (then ``classes`` is its keys).
``image_file(path, *, mode="RGB", size=(14, 20), color=(200, 30, 30), fmt=None) -> path``
    One solid-colour image in a PIL mode ("RGB", "L", "RGBA", "CMYK", "P"), saved in
    ``fmt`` (``None``: from the suffix, so ``fmt="PNG"`` with a ``.jpg`` name writes a
    misnamed file).

Common arguments of the folder builders:

- ``size``: an int (square) or ``(height, width)``.
- ``fmt``: ``"png"`` (lossless: files decode to exactly the drawn pixels) or ``"jpeg"``
  (quality 95, files named ``.jpg``).
- ``pattern``: ``"square"`` is learnable - a bright square on a dark noisy background
  whose horizontal place (left, centre, right) and colour channel are the class (class
  ``k`` uses place and channel ``k % 3``), the same drawing as ``tiny_images``;
  ``"noise"`` is uniform noise, every image distinct.
- ``junk=True`` also writes a macOS ``root/.DS_Store`` (a file the loader must skip).
"""

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

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.seeding import seed_everything

DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(100)


@pytest.fixture(autouse=True)
def _seed():
    seed_everything(0)


# ----------------------------------------------------------------------------- drawing


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _draw(rng: np.random.Generator, label: int, size: int | Sequence[int], pattern: str) -> np.ndarray:
    """One (H, W, 3) uint8 image of class ``label`` (see the module docstring)."""
    h, w = _hw(size)
    if pattern == "noise":
        return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    if pattern != "square":
        raise ValueError(f"pattern must be 'square' or 'noise', got {pattern!r}")
    img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    s = min(h, w) // 4
    x0 = [2, w // 2 - s // 2, w - s - 2][label % 3]
    y0 = int(rng.integers(2, h - s - 2))
    img[y0 : y0 + s, x0 : x0 + s, label % 3] = 255
    return img


def _write(folder: Path, count: int, label: int, rng, size, fmt: str, pattern: str) -> None:
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = Image.fromarray(_draw(rng, label, size, pattern))
        if fmt == "png":
            img.save(folder / f"{i:02d}.png")
        else:
            img.save(folder / f"{i:02d}.jpg", quality=95)


# ----------------------------------------------------------------------------- the fixtures


@pytest.fixture(scope="session")
def tiny_images():
    """A learnable set of uint8 RGB images in memory (see the module docstring):
    ``tiny_images(n_per_class=10, size=32, seed=0, n_classes=3) -> (images, labels)``."""

    def make(n_per_class: int = 10, size: int = 32, seed: int = 0, n_classes: int = 3):
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(n_classes, dtype=np.int64), n_per_class)
        return np.stack([_draw(rng, int(k), size, "square") for k in labels]), labels

    return make


@pytest.fixture(scope="session")
def split_folders():
    """Write ``root/train/<class>/`` and ``root/<held_out>/<class>/`` image folders (see
    the module docstring) and return ``root``."""

    def make(
        root: Path,
        *,
        classes: Sequence[str] = ("ants", "bees", "wasps"),
        n_train: int = 10,
        n_test: int = 4,
        held_out: str = "test",
        size: int | Sequence[int] = 32,
        fmt: str = "png",
        pattern: str = "square",
        seed: int = 0,
        junk: bool = False,
    ) -> Path:
        root = Path(root)
        rng = np.random.default_rng(seed)
        for split, n in (("train", n_train), (held_out, n_test)):
            for k, cls in enumerate(classes):
                _write(root / split / cls, n, k, rng, size, fmt, pattern)
        if junk:
            (root / ".DS_Store").write_bytes(DS_STORE)
        return root

    return make


@pytest.fixture(scope="session")
def class_folders():
    """Write ``root/<class>/`` image folders (see the module docstring) and return ``root``."""

    def make(
        root: Path,
        *,
        classes: Sequence[str] = ("ants", "bees", "wasps"),
        n: int | Mapping[str, int] = 10,
        size: int | Sequence[int] = 32,
        fmt: str = "png",
        pattern: str = "square",
        seed: int = 0,
        junk: bool = False,
    ) -> Path:
        root = Path(root)
        counts = dict(n) if isinstance(n, Mapping) else dict.fromkeys(classes, n)
        rng = np.random.default_rng(seed)
        for k, (cls, count) in enumerate(counts.items()):
            _write(root / cls, count, k, rng, size, fmt, pattern)
        if junk:
            (root / ".DS_Store").write_bytes(DS_STORE)
        return root

    return make


@pytest.fixture(scope="session")
def image_file():
    """Write one solid-colour image in a given PIL mode and file format (see the module
    docstring) and return its path."""

    def make(
        path: Path,
        *,
        mode: str = "RGB",
        size: Sequence[int] = (14, 20),
        color: tuple[int, int, int] = (200, 30, 30),
        fmt: str | None = None,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        wh = (int(size[1]), int(size[0]))  # PIL wants (width, height)
        if mode in ("RGB", "P"):
            img = Image.new("RGB", wh, color)
            img = img.convert("P") if mode == "P" else img
        elif mode == "L":
            img = Image.new("L", wh, 128)
        elif mode == "RGBA":
            img = Image.new("RGBA", wh, (*color, 100))
        elif mode == "CMYK":
            img = Image.new("CMYK", wh, (0, 255, 255, 0))
        else:
            raise ValueError(f"mode must be RGB, L, RGBA, CMYK or P, got {mode!r}")
        img.save(path, format=fmt)
        return path

    return make


@pytest.fixture(autouse=True, scope="session")
def _cache_outside_home(tmp_path_factory):
    """Tests that run a study without a cache folder of their own fill a session folder, not
    the user's cache (``STUDY_CACHE_DIR`` set by whoever runs the tests wins)."""
    import os

    if "STUDY_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["STUDY_CACHE_DIR"] = str(tmp_path_factory.mktemp("study-cache"))
    yield
    del os.environ["STUDY_CACHE_DIR"]


# ----------------------------------------------------------------------------- the trained arms


@pytest.fixture(scope="session")
def pytorch_case(tiny_images, tmp_path_factory):
    """The PyTorch arm trained once per session, with what the contract checks need
    (``tests/arm_cases.py``). Read only."""
    from tests.arm_cases import pytorch_case

    return pytorch_case(tiny_images, tmp_path_factory)


@pytest.fixture(scope="session")
def keras_case(tiny_images, tmp_path_factory):
    """The Keras arm on its small stand-in backbone, trained once per session
    (``tests/arm_cases.py``). Read only."""
    from tests.arm_cases import keras_case

    return keras_case(tiny_images, tmp_path_factory)


@pytest.fixture(scope="session")
def keras_cnn_case(tiny_images, tmp_path_factory):
    """The Keras CNN arm trained once per session (``tests/arm_cases.py``). Read only."""
    from tests.arm_cases import keras_cnn_case

    return keras_cnn_case(tiny_images, tmp_path_factory)


@pytest.fixture(scope="session")
def pytorch_resnet50_case(tiny_images, tmp_path_factory):
    """The PyTorch ResNet50 arm on a small stand-in of ResNet50's kind, trained once per session
    (``tests/arm_cases.py``). Read only."""
    from tests.arm_cases import pytorch_resnet50_case

    return pytorch_resnet50_case(tiny_images, tmp_path_factory)


@pytest.fixture(scope="session")
def fake_case(tiny_images, tmp_path_factory):
    """The fake NumPy arm trained once per session (``tests/arm_cases.py``). Read only."""
    from tests.arm_cases import fake_case

    return fake_case(tiny_images, tmp_path_factory)


# ----------------------------------------------------------------------------- one small study


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, split_folders):
    """Two fake arms, seeds 0 and 1, every section of the report, run once per session through
    ``experiments.run_study`` (``tests/small_study.py``): (data, config, out). Read only."""
    from tests.small_study import make_small_study

    return make_small_study(tmp_path_factory.mktemp("small-study"), split_folders)


@pytest.fixture
def two_fakes():
    """The small study's two fake arms as the registry's only arms, for one test."""
    from tests.small_study import fakes_registered

    with fakes_registered():
        yield
