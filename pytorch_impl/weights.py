"""Which weights the PyTorch ResNet50's backbone holds: the Keras arm's, converted once and cached.

The backbone is the Keras arm's by construction: this module builds it with the Keras arm's own
loader (``keras_impl.weights.load_backbone``, setting ``keras.weights``) under the same seed, so it
holds ImageNet's weights when Keras can have them (its download or cache, or a local file) and
otherwise the very random backbone the Keras arm starts from, recorded the same way. Its weights
are converted layer by layer (:func:`keras_to_torch`: Keras's HWIO kernels to PyTorch's OIHW,
batch norm's gamma, beta, moving mean and variance to weight, bias and running statistics) and
cached under the study's cache folder as ``pytorch_resnet50_backbone/<version>-<digest>.npz``,
keyed by the digest of the Keras weights (``keras_impl.weights.weights_digest``, the digest the
Keras arm's feature cache keys on): the same Keras weights are converted once.

Why here, in the PyTorch arm's own process, rather than from a file the Keras arm wrote: the arms
run in separate processes, possibly at once or alone (``--only``), so reading the Keras arm's
output would make one arm wait for the other. Building the backbone here costs TensorFlow's import
and the build (seconds, in the train stage only: predicting and explaining load the saved PyTorch
model) and keeps the arm one process with no second interpreter to start and no files to pass.
PyTorch's compiler stack (``torch._dynamo``) is imported before TensorFlow, which would otherwise
make PyTorch crash later in the same process (``tests/conftest.py`` says when).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import StudyConfig
from common.data.decode import default_cache_dir
from common.io import write_npz_atomic
from common.seeding import seed_everything
from pytorch_impl.resnet50 import ResNet50Classifier

CONVERSION_VERSION = "keras-resnet50-to-torch-v1"  # bump when the conversion changes
CACHE_FOLDER = "pytorch_resnet50_backbone"


@dataclass(frozen=True)
class ConvertedBackbone:
    """The Keras backbone's weights as the PyTorch backbone's state dict, and what they are."""

    state: dict[str, np.ndarray]  # KerasResNet's state dict (names and layouts), float32
    record: str  # which weights: keras_impl.weights' record ("imagenet", "random (...)", "file: ...")
    digest: str  # keras_impl.weights.weights_digest of the Keras backbone
    cache: str  # "hit" (read from the cache) or "miss" (converted now and cached)


def _torch_prefix(keras_layer: str) -> str:
    """The PyTorch module of a Keras ResNet layer: ``conv1_conv`` → ``conv1.0``, ``conv1_bn`` →
    ``conv1.1``, ``conv3_block2_1_conv`` → ``conv3.block2.conv1.0``, ``conv3_block1_0_bn`` (the
    projection shortcut) → ``conv3.block1.shortcut.1``.

    Raises:
        ValueError: a layer name that is not one of a Keras ResNet's weighted layers.
    """
    match = re.fullmatch(r"conv1_(conv|bn)|(conv[2-5])_(block\d+)_([0-3])_(conv|bn)", keras_layer)
    if match is None:
        raise ValueError(f"not a layer of Keras's ResNet with weights: {keras_layer!r}")
    if match[1]:
        return f"conv1.{0 if match[1] == 'conv' else 1}"
    unit = "shortcut" if match[4] == "0" else f"conv{match[4]}"
    return f"{match[2]}.{match[3]}.{unit}.{0 if match[5] == 'conv' else 1}"


def keras_to_torch(layers: Mapping[str, Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """The state dict of :class:`pytorch_impl.resnet50.KerasResNet` from a Keras ResNet's weights.

    Args:
        layers: Keras layer name → that layer's ``get_weights()``: ``[kernel (kh, kw, in, out),
            bias]`` for a convolution, ``[gamma, beta, moving_mean, moving_variance]`` for a
            batch norm.

    Returns:
        float32 arrays by PyTorch name: kernels as (out, in, kh, kw), batch norm as weight,
        bias, running_mean, running_var (and ``num_batches_tracked`` 0, unused in eval mode).
    """
    state: dict[str, np.ndarray] = {}
    for name, arrays in layers.items():
        prefix = _torch_prefix(name)
        values = [np.asarray(a, dtype=np.float32) for a in arrays]
        if name.endswith("_conv"):
            kernel, bias = values
            state[f"{prefix}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
            state[f"{prefix}.bias"] = bias
        else:
            for key, value in zip(("weight", "bias", "running_mean", "running_var"), values, strict=True):
                state[f"{prefix}.{key}"] = value
            state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return state


def load_backbone_state(model: ResNet50Classifier, state: Mapping[str, np.ndarray]) -> None:
    """Put a converted backbone (:func:`keras_to_torch`) into ``model``: every tensor, none missing.

    Raises:
        RuntimeError: names or shapes that do not fit the model's backbone.
    """
    model.backbone.load_state_dict({name: torch.from_numpy(np.asarray(v)) for name, v in state.items()}, strict=True)


def keras_layers(backbone) -> dict[str, list[np.ndarray]]:
    """A Keras model's weights by layer name (the layers that have weights), as NumPy arrays."""
    return {layer.name: layer.get_weights() for layer in backbone.layers if layer.weights}


def keras_backbone(weights: str, image_size: int, seed: int):
    """The Keras arm's ResNet50 backbone, as its ``create`` builds it under ``seed``: the model,
    its weights record and the digest of its weights."""
    import torch._dynamo  # noqa: F401  (before TensorFlow, see the module docstring)

    import keras_impl  # noqa: F401  (TensorFlow's environment, before TensorFlow is imported)
    from keras_impl.weights import load_backbone, weights_digest

    seed_everything(seed)  # the Keras arm's create seeds, then loads its backbone first
    backbone, record = load_backbone(weights, image_size)
    return backbone, record, weights_digest(backbone)


def converted_backbone(weights: str, image_size: int, seed: int, cache_dir: Path) -> ConvertedBackbone:
    """The Keras arm's backbone (setting ``weights``, seed ``seed``) converted for PyTorch, from
    the cache when these Keras weights were converted before (:func:`keras_to_torch`)."""
    backbone, record, digest = keras_backbone(weights, image_size, seed)
    path = Path(cache_dir) / CACHE_FOLDER / f"{CONVERSION_VERSION}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                return ConvertedBackbone({k: cached[k] for k in cached.files}, record, digest, "hit")
        except (OSError, ValueError):  # a damaged cache file: convert again
            pass
    state = keras_to_torch(keras_layers(backbone))
    write_npz_atomic(path, **state)
    return ConvertedBackbone(state, record, digest, "miss")


def cache_dir(cfg: StudyConfig) -> Path:
    """The study's cache folder (``data.cache_dir``, else ``$STUDY_CACHE_DIR`` or the user's cache)."""
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
