"""Which weights the ResNet50 backbone starts from, and a record of it.

``KerasConfig.weights`` is one of:

- ``"imagenet"``: Keras's own loader (``ResNet50(weights="imagenet")``), so online users
  get the real download and its cache (``$KERAS_HOME/models`` or ``~/.keras/models``).
  When the file can be neither found in the cache nor downloaded, the run goes on with a
  randomly initialised backbone, says so in one warning, and records it;
- ``"none"`` (or ``None``): random on purpose;
- a path to a local no-top weights file (the published ``*_notop.h5`` or a Keras 3
  ``.weights.h5``).

The recorded string (``backbone_weights``) is one of ``"imagenet"``, ``"file: <path>"``,
``"random (none requested)"`` or ``RANDOM_UNAVAILABLE``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import warnings
from pathlib import Path

import keras  # noqa: F401  (keras_impl/__init__ has pinned the backend)
import numpy as np

from common.errors import ConfigError

IMAGENET = "imagenet"
RANDOM_REQUESTED = "random (none requested)"
RANDOM_UNAVAILABLE = "random (ImageNet weights unavailable)"


class BackboneWeightsWarning(UserWarning):
    """The ImageNet weights could not be had; the backbone starts random."""


def load_backbone(weights: str | None, image_size: int) -> tuple[keras.Model, str]:
    """ResNet50 without its top for ``(image_size, image_size, 3)`` inputs.

    Args:
        weights: ``"imagenet"``, ``"none"``/``None`` or a path to a no-top weights file.
        image_size: square input side in pixels (ResNet50 needs at least 32).

    Returns:
        The backbone (a Functional model named ``"resnet50"``) and the string that
        records which weights it holds.

    Raises:
        ConfigError: ``weights`` is a path that does not exist.
    """
    shape = (image_size, image_size, 3)
    if weights is None or str(weights).lower() == "none":
        return _resnet50(None, shape), RANDOM_REQUESTED
    if str(weights).lower() == IMAGENET:
        try:
            return _resnet50(IMAGENET, shape), IMAGENET
        except Exception as exc:  # noqa: BLE001  (narrowed right below)
            if not _is_download_failure(exc):
                raise
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
            warnings.warn(
                f"ResNet50 ImageNet weights unavailable ({reason}); continuing with a randomly "
                "initialised backbone - this run is NOT transfer learning",
                BackboneWeightsWarning,
                stacklevel=2,
            )
            return _resnet50(None, shape), RANDOM_UNAVAILABLE
    path = Path(os.path.expanduser(str(weights)))
    if not path.is_file():
        raise ConfigError(
            f"keras.weights: no such file {str(weights)!r}; expected 'imagenet', 'none' or a path to a "
            "no-top ResNet50 weights file"
        )
    return _resnet50(str(path), shape), f"file: {weights}"


def weights_digest(model: keras.Model) -> str:
    """A short sha256 of every weight of ``model`` (names, shapes and values)."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"{w.path}:{value.dtype}:{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


def _resnet50(weights: str | None, shape: tuple[int, int, int]) -> keras.Model:
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=shape)


def _is_download_failure(exc: BaseException) -> bool:
    """True for what Keras's ``get_file`` raises when the weights file cannot be had.

    ``get_file`` re-raises ``HTTPError``/``URLError`` from ``urlretrieve`` as a bare
    ``Exception("URL fetch failure on ...")``; other network and disk errors arrive as
    ``OSError`` (``URLError`` is one too); a download that fails the published hash is a
    ``ValueError`` naming the hash.
    """
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return True
    if type(exc) is Exception and (
        str(exc).startswith("URL fetch failure") or isinstance(exc.__context__, urllib.error.URLError)
    ):
        return True
    return isinstance(exc, ValueError) and "file hash does not match" in str(exc)
