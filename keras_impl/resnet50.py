"""ResNet50 (frozen) with the published head, taking raw pixels.

Pixel input (float32 RGB in [0, 255], NHWC: the values the PyTorch arm gets)
→ ``ResNet50Preprocess`` (``keras.applications.resnet50.preprocess_input`` as a layer)
→ ResNet50 without its top → 7x7 average pooling (global average pooling when the
feature map is not 7x7) → flatten → Dense(256, relu) → Dropout(0.5) → Dense(K) logits
→ Softmax.

The saved model is the probability model; ``model.logits_model`` and :func:`head_model`
are views that share its layers (the explainers use the first, training on cached
backbone features the second). Every op between pixels and logits is one that shap's
TensorFlow Deep SHAP handles (ReverseV2, Sub, Conv2D, FusedBatchNorm/linear batch norm,
Relu, MaxPool, Pad, AddV2, AvgPool/Mean, Reshape, MatMul).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from common.registry import arm_spec
from keras_impl.config import KerasConfig

# keras.applications.resnet50.preprocess_input ("caffe" mode): BGR channel means of ImageNet.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="keras_impl")
class ResNet50Preprocess(layers.Layer):
    """``resnet50.preprocess_input`` as a layer: RGB→BGR, then minus the ImageNet BGR mean.

    Linear (a channel reversal and a constant shift), so Deep SHAP passes through it and
    both arms are explained in the same raw-pixel space.
    """

    def call(self, x):  # (B, H, W, 3) RGB in [0, 255]
        x = ops.flip(x, axis=-1)  # RGB -> BGR (TF op ReverseV2)
        return x - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=x.dtype)  # (B, H, W, 3) BGR, centred

    def compute_output_shape(self, input_shape):
        return input_shape


def build_model(n_classes: int, image_size: int, cfg: KerasConfig, backbone: keras.Model) -> keras.Model:
    """The full pixel-input probability model around ``backbone``.

    Args:
        n_classes: number of classes K.
        image_size: square input side; must match ``backbone``'s input.
        cfg: the Keras section of the study config (``dense_units``, ``dropout``,
            ``fine_tune``).
        backbone: ResNet50 without its top (see ``weights.load_backbone``).

    Returns:
        A Functional model ``pixels (B, S, S, 3) float32 -> probabilities (B, K)`` whose
        layers are named ``preprocess``, ``resnet50``, ``pool``, ``flatten``, ``dense``,
        ``dropout``, ``logits`` and ``probabilities``.
    """
    backbone.trainable = cfg.fine_tune
    pixels = keras.Input((image_size, image_size, 3), name="pixels")  # raw RGB 0..255
    x = ResNet50Preprocess(name="preprocess")(pixels)
    # training=False keeps the backbone's BatchNorm layers in inference mode (their
    # ImageNet statistics) even when fine-tuning, as in the Keras transfer-learning guide;
    # otherwise small batches of a new data set would overwrite those statistics.
    x = backbone(x, training=False)  # (B, h, w, 2048)
    fmap = x.shape[1:3]
    if tuple(fmap) == (7, 7):  # the published head at 224x224
        x = layers.AveragePooling2D(pool_size=(7, 7), name="pool")(x)  # (B, 1, 1, 2048)
    else:  # any other input size: the same average, over whatever map there is
        x = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)  # (B, 1, 1, 2048)
    x = layers.Flatten(name="flatten")(x)  # (B, 2048): the cached "features"
    x = layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    logits = layers.Dense(n_classes, name="logits")(x)  # linear: what the explainers see
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(pixels, probabilities, name=arm_spec("keras").name)


def feature_model(model: keras.Model) -> keras.Model:
    """Pixels → pooled backbone features ``(B, 2048)``, sharing ``model``'s layers."""
    return keras.Model(model.inputs, model.get_layer("flatten").output, name="keras_resnet50_features")


def head_model(model: keras.Model) -> keras.Model:
    """Pooled features ``(B, 2048)`` → probabilities through ``model``'s own head layers.

    Training this trains ``model``: the Dense, Dropout and logits layers are the same
    objects, so afterwards the head sits on the backbone again.
    """
    features = keras.Input(model.get_layer("flatten").output.shape[1:], name="features")
    x = features
    for name in ("dense", "dropout", "logits", "probabilities"):
        x = model.get_layer(name)(x)
    return keras.Model(features, x, name="keras_resnet50_head")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer("resnet50")


def augmentation(seed: int) -> keras.Sequential:
    """The published augmentation as Keras preprocessing layers (active only in training).

    Published (``ImageDataGenerator``): rotation 25°, zoom 0.1, width/height shift 0.1,
    shear 0.2, horizontal flip, fill mode "nearest". ``ImageDataGenerator`` read
    ``shear_range=0.2`` as an angle in *degrees* (a barely visible shear);
    ``RandomShear(x_factor=0.2)`` shears by up to 20 % of the image (about 11°).
    Training wraps the model in these layers; the saved model does not contain them.
    """
    fill = dict(fill_mode="nearest")
    return keras.Sequential(
        [
            layers.RandomRotation(25 / 360, seed=seed, **fill),  # factor is a fraction of a full turn
            layers.RandomZoom(0.1, 0.1, seed=seed + 1, **fill),  # independent zoom per axis, as published
            layers.RandomTranslation(0.1, 0.1, seed=seed + 2, **fill),
            layers.RandomShear(x_factor=0.2, seed=seed + 3, **fill),
            layers.RandomFlip("horizontal", seed=seed + 4),
        ],
        name="augmentation",
    )
