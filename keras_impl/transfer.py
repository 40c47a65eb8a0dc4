"""Training the Keras ResNet50 arm (transfer learning): the published recipe (Adam, sparse
categorical cross-entropy), two routes.

- Frozen backbone, no augmentation (the default): every image goes through ResNet50
  once (batched, cached on disk under ``data.cache_dir``), then only the head is trained
  on those pooled features. The head's layers are the full model's own, so the trained
  full model (pixels in) is what gets saved and explained.
- Augmentation or fine-tuning: the full model is trained end to end on pixels.

Both routes run the same loop (``train.train``): the same seeded shuffles and the same
batches, and the Dropout layer draws the same masks, so for a frozen backbone they give
the same model up to float rounding (``tests/test_keras_arm.py`` checks this).
"""

from __future__ import annotations

import hashlib
import logging
import time
from functools import partial
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from common.arm import Fitted, TrainingData
from common.data.imagestore import ImageStore, concatenate, take
from common.io import stable_key, write_npz_atomic
from keras_impl import model as km
from keras_impl import onednn_enabled
from keras_impl import resnet50 as kr
from keras_impl.config import KerasConfig
from keras_impl.train import train
from keras_impl.weights import weights_digest

log = logging.getLogger(__name__)

FEATURES_VERSION = "resnet50-pooled-features/v2"  # bump when the feature definition changes


def fit(
    model: keras.Model,
    data: TrainingData,
    settings: KerasConfig,
    *,
    seed: int,
    backbone_weights: str,
    use_features: bool | None = None,
) -> Fitted:
    """Train the full model on ``data`` by the fastest route the settings allow.

    Args:
        model: the full model from :func:`keras_impl.resnet50.build_model`.
        data: the shared split (uint8 pixels, int labels) and its content key.
        settings: the study config's ``keras`` section.
        seed: seeds the batches, the head's Dropout and the augmentation.
        backbone_weights: the record from ``weights.load_backbone`` (part of the
            feature-cache key).
        use_features: ``None`` picks the cached-feature route whenever the backbone is
            frozen and augmentation is off; ``False`` forces end-to-end training (tests).

    Returns:
        The history, and ``info`` with ``backbone_weights``, ``feature_seconds``,
        ``feature_cache`` ("hit", "miss" or "off") and ``training_route`` ("cached
        features" or "end to end").

    Raises:
        ValueError: ``use_features=True`` with augmentation or fine-tuning.
    """
    end_to_end_needed = settings.augment or settings.fine_tune
    if use_features is None:
        use_features = not end_to_end_needed
    if use_features and end_to_end_needed:
        raise ValueError("cached features need a frozen backbone and no augmentation")
    adam = partial(keras.optimizers.Adam, learning_rate=settings.lr)
    recipe = dict(epochs=settings.epochs, batch_size=settings.batch_size, optimizer=adam, seed=seed)
    start = time.perf_counter()
    info = {"backbone_weights": backbone_weights, "feature_seconds": 0.0, "feature_cache": "off"}
    if use_features:
        f_train, f_val, cache = backbone_features(model, data, backbone_weights, batch_size=settings.batch_size)
        info.update(feature_seconds=time.perf_counter() - start, feature_cache=cache, training_route="cached features")
        history = train(kr.head_model(model), f_train, data.y_train, f_val, data.y_val, **recipe)
    else:
        info["training_route"] = "end to end"
        augmenter = kr.augmentation(seed) if settings.augment else None
        history = train(model, data.x_train, data.y_train, data.x_val, data.y_val, augmenter=augmenter, **recipe)
    return Fitted(history, info)


def backbone_features(
    model: keras.Model, data: TrainingData, backbone_weights: str, *, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray, str]:
    """Pooled backbone features of ``data``'s train and validation images, cached.

    Features belong to pixels, not to a split: the cache file
    (``<cache_dir>/keras_features/<key>.npz``) holds one feature row per distinct image
    of train ∪ validation, found by a digest of its pixels, and is keyed by the backbone
    weights (their record and a digest of their values), the image size, the set of
    those digests and whether TensorFlow's oneDNN kernels computed them. So another
    seed's split of the same images reads the same file, and a different weights file, a
    changed image or the other kernels never read stale features.

    Returns:
        float32 ``(N_train, 2048)`` and ``(N_val, 2048)`` features, and "hit", "miss" or
        "off" (no ``cache_dir``).
    """
    features = kr.feature_model(model)
    if data.cache_dir is None:
        return _predict(features, data.x_train, batch_size), _predict(features, data.x_val, batch_size), "off"
    images = concatenate(data.x_train, data.x_val)  # a view when the images are the decode cache's
    digests = pixel_digests(images)
    unique, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    key = stable_key(
        FEATURES_VERSION,
        backbone_weights,
        weights_digest(kr.backbone_of(model)),
        int(model.input_shape[1]),
        hashlib.sha256(unique.tobytes()).hexdigest(),
        {"onednn": onednn_enabled()},  # oneDNN's kernels round differently from Eigen's
    )
    path = Path(data.cache_dir) / "keras_features" / f"{key}.npz"
    width = features.output_shape[-1]
    table, status = None, "miss"
    if path.is_file():
        try:
            with np.load(path) as z:
                cached_digests, cached = z["digests"], z["features"]
            if np.array_equal(cached_digests, unique) and cached.shape == (len(unique), width):
                log.info("backbone features: cache hit %s", path)
                table, status = cached, "hit"
            else:
                log.warning("backbone features in %s do not match these images; recomputing", path)
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache file: recompute it
            log.warning("backbone features in %s unreadable (%s); recomputing", path, exc)
    if table is None:
        table = _predict(features, take(images, first), batch_size)
        write_npz_atomic(path, digests=unique, features=table)
    rows = inverse.reshape(-1)
    return table[rows[: len(data.x_train)]], table[rows[len(data.x_train) :]], status


def pixel_digests(images: np.ndarray | ImageStore, chunk: int = 256) -> np.ndarray:
    """One 16-byte BLAKE2 digest of each image's pixels (``S16`` array), read ``chunk``
    images at a time. The image size is part of the cache key, so the bytes alone
    identify an image."""
    return np.array(
        [
            hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).digest()
            for start in range(0, len(images), chunk)
            for im in images[start : start + chunk]
        ],
        dtype="S16",
    )


def _predict(model: keras.Model, x: np.ndarray | ImageStore, batch_size: int) -> np.ndarray:
    """``model`` on ``x`` in batches (each read when its turn comes), with a progress bar
    (uint8 pixels → float32)."""
    predict = km.predictor(model)
    out = [
        predict(x[i : i + batch_size].astype(np.float32))
        for i in tqdm(range(0, len(x), batch_size), desc="ResNet50 features", unit="batch", leave=False)
    ]
    return np.concatenate(out).astype(np.float32)
