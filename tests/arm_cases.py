"""The arms the contract checks (``tests/arm_checks.py``) run over, each trained once per session.

An :class:`ArmCase` is a trained tiny arm with what the checks need around it: its training
data and result, the images and background it explains, how to load what it saved, the
model's logits and gradients computed by its framework directly (outside the arm's code, as
references), a snapshot of everything its model holds, and its tolerance: how far two float
evaluations of its outputs may lie apart (``tests/tolerance.py``).

- ``pytorch``: the published CNN on 32x32 images, 6 epochs on 30 images;
- ``keras``: the Keras arm (its head, preprocessing and training) on a small stand-in for
  ResNet50 (:func:`stand_in_backbone`), 2 epochs on 12 images through cached features;
- ``keras_cnn``: the published CNN in Keras, as the ``pytorch`` case;
- ``pytorch_resnet50``: the PyTorch ResNet50 arm (its preprocessing, head and training) on a
  small network of ResNet50's kind (:data:`RESNET_STAND_IN`: one block per stage, narrow), with
  PyTorch's random backbone: the conversion of Keras's weights is ``tests/test_same_backbone.py``'s;
- ``fake``: the test-only linear NumPy arm (``tests/fake_arm``), float64 throughout.

``tests/conftest.py`` builds each case once per session (fixtures ``<name>_case``);
``tests/test_pytorch_arm.py`` and ``tests/test_keras_arm.py`` read the same trained arms for
their framework's own tests. Every reader leaves the arm as it
found it. The frameworks are imported inside the builders, so this module loads without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from common.arm import Arm, TrainingData, TrainResult
from common.config import load_config
from common.registry import OUTPUTS
from tests.tolerance import network_atol, unit_roundoff

if TYPE_CHECKING:
    import keras

SIZE = 32  # the image side of the PyTorch and Keras cases

# The terms of one output unit's sum in each layer (tests.tolerance.network_atol).
# The CNN at SIZE: conv 5x5x3, conv 3x3x6, then the dense layers over the flattened
# features (576 = pytorch_impl.cnn.flatten_width(SIZE), checked where the case is built).
CNN_FAN_INS = (5 * 5 * 3, 3 * 3 * 6, 576, 120, 84)
TRAINED_EPOCHS = 6  # the PyTorch case's training

# The Keras stand-in arm: conv 3x3x3, conv 3x3x8, the pooling average over the 8x8 map,
# Dense(256) over the pooled features, the logits over 256; BACKBONE_FAN_INS: up to the
# pooled features.
STAND_IN = "random (stand-in)"  # the backbone_weights record of a stand-in arm
STAND_IN_WIDTH = 16  # channels of the stand-in's last map: the pooled feature width
BACKBONE_FAN_INS = (3 * 3 * 3, 3 * 3 * 8, (SIZE // 4) ** 2)
STAND_IN_FAN_INS = (*BACKBONE_FAN_INS, STAND_IN_WIDTH, 256)

FAKE_SIZE = 16  # the fake arm's image side: one linear layer over every pixel


@dataclass(frozen=True)
class CaseSpec:
    """What the collection of the checks knows of a case before any arm is built."""

    name: str
    marks: tuple  # pytest marks of every test of the case
    outputs: tuple[str, ...]  # the explained outputs the arm supports (common.registry.OUTPUTS)


CASE_SPECS = (
    CaseSpec("pytorch", (pytest.mark.pytorch,), OUTPUTS),
    CaseSpec("keras", (pytest.mark.keras,), OUTPUTS),
    CaseSpec("keras_cnn", (pytest.mark.keras,), OUTPUTS),
    CaseSpec("pytorch_resnet50", (pytest.mark.pytorch,), OUTPUTS),
    CaseSpec("fake", (), ("logits",)),  # the fake arm explains logits only
)


@dataclass
class ArmCase:
    """A trained arm and what the contract checks compare it with. Read only: a check that
    changes the arm (its mode, its weights) puts it back."""

    name: str
    arm: Arm
    data: TrainingData
    result: TrainResult  # what ``arm.fit(data)`` returned
    epochs: int  # the epochs it was trained for
    images: np.ndarray  # the explained images: uint8 (N, H, W, C), N >= 2
    background: np.ndarray  # the background images: uint8 (B, H, W, C)
    load: Callable[[Path], Arm]  # the arm's class's ``load`` under the case's config
    saved_files: tuple[str, ...]  # the files ``save(folder / spec.model_filename)`` leaves, sorted
    logits: Callable[[np.ndarray], np.ndarray]  # (N, K) the model's logits, computed by its framework
    gradients: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (N, H, W, C): d logit[classes[i]] / d pixels
    state: Callable[[Arm], dict[str, np.ndarray]]  # everything an arm's model holds, as NumPy copies
    fan_ins: tuple[int, ...]  # the terms of one unit's sum in each layer, for the tolerance
    dtype: type  # the float type the model computes in
    scratch: Path  # a folder of the case's own (a check makes its own subfolder)
    image_logits: np.ndarray = field(init=False)  # the trained model's logits of ``images``, by ``logits``
    background_logits: np.ndarray = field(init=False)  # ... and of ``background``
    references: dict = field(default_factory=dict)  # explanations the checks compare with (tests.arm_checks)

    def __post_init__(self) -> None:
        self.image_logits, self.background_logits = self.logits(self.images), self.logits(self.background)

    def atol(self, magnitude: float) -> float:
        """How far two evaluations of the model's outputs (or of maps computed through it) of
        absolute size ``magnitude`` may lie apart: the network's bound in its float type
        (tests/tolerance.py) plus each side's rounding to the float32 the arm interface hands out."""
        return network_atol(self.fan_ins, magnitude, self.dtype) + 2 * unit_roundoff(np.float32) * float(magnitude)


def _numpy_state(items) -> dict[str, np.ndarray]:
    return {name: np.array(value, copy=True) for name, value in items}


# ------------------------------------------------------------------------------- PyTorch


def pytorch_cfg(seed: int = 0, **pytorch):
    settings = {"epochs": 2, "batch_size": 16, "device": "cpu", **pytorch}
    return load_config(overrides={"seed": seed, **{f"pytorch.{k}": v for k, v in settings.items()}})


def pytorch_training_data(tiny_images, n_per_class: int = 10, n_val_per_class: int = 4) -> TrainingData:
    x_train, y_train = tiny_images(n_per_class, SIZE, seed=0)
    x_val, y_val = tiny_images(n_val_per_class, SIZE, seed=1)
    return TrainingData(x_train, y_train, x_val, y_val, data_key="tiny")


def pytorch_case(tiny_images, tmp_path_factory) -> ArmCase:
    """The tiny CNN trained for 6 epochs on 30 images (12 validation images, 4 per class in
    class order); it explains 3 validation images (one per class) against 6 training images."""
    pytest.importorskip("torch")
    pytest.importorskip("shap")
    from pytorch_impl.cnn import flatten_width
    from pytorch_impl.cnn_arm import PyTorchArm

    assert flatten_width(SIZE) == CNN_FAN_INS[2]
    data = pytorch_training_data(tiny_images)
    arm = PyTorchArm.create(pytorch_cfg(epochs=TRAINED_EPOCHS, batch_size=8), n_classes=3, image_size=SIZE)
    result = arm.fit(data)
    return ArmCase(
        name="pytorch",
        arm=arm,
        data=data,
        result=result,
        epochs=TRAINED_EPOCHS,
        images=data.x_val[::4],
        background=data.x_train[::5],
        load=lambda path: PyTorchArm.load(path, pytorch_cfg()),
        saved_files=("model.pt", "weights.npz"),  # the state dict as NumPy too, for the Keras twin
        **torch_references(arm),
        fan_ins=CNN_FAN_INS,
        dtype=np.float32,
        scratch=tmp_path_factory.mktemp("pytorch-case"),
    )


def torch_references(arm) -> dict[str, Callable]:
    """A PyTorch arm's logits, gradients and state, computed by PyTorch directly (ArmCase's fields)."""
    import copy

    import torch

    from pytorch_impl.model import images_to_tensor

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return arm.model(images_to_tensor(images).float()).numpy()

    def gradients(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2).requires_grad_(True)
        z = copy.deepcopy(arm.model).eval()(x)
        (grad,) = torch.autograd.grad(z[np.arange(len(images)), classes].sum(), x)
        return grad.permute(0, 2, 3, 1).numpy()

    state = lambda a: _numpy_state((k, v.detach().cpu().numpy()) for k, v in a.model.state_dict().items())
    return {"logits": logits, "gradients": gradients, "state": state}


# ------------------------------------------------------------------------------- Keras


def keras_cfg(seed: int = 0, **keras_settings):
    settings = {"weights": "none", "epochs": 2, "batch_size": 4, **keras_settings}
    return load_config(overrides={"seed": seed, **{f"keras.{k}": v for k, v in settings.items()}})


def keras_training_data(tiny_images, cache_dir=None, data_key: str = "tiny") -> TrainingData:
    x_train, y_train = tiny_images(4, SIZE, seed=0)  # 12 images: 3 batches of 4
    x_val, y_val = tiny_images(2, SIZE, seed=1)  # 6 images
    return TrainingData(x_train, y_train, x_val, y_val, data_key=data_key, cache_dir=cache_dir)


def stand_in_backbone(size: int = SIZE) -> keras.Model:
    """A small backbone in ResNet50's place: the layer kinds of ResNet50's stem (all ops
    shap's TensorFlow Deep SHAP handles), named "resnet50" so ``keras_impl.resnet50.backbone_of`` finds it."""
    import keras

    pixels = keras.Input((size, size, 3))
    x = pixels
    for i, filters in enumerate((8, STAND_IN_WIDTH), 1):  # fixed names: the feature cache keys on them
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return keras.Model(pixels, x, name="resnet50")


def stand_in_arm(cfg, n_classes: int = 3):
    """The Keras arm (the project's head, preprocessing and training) on the stand-in backbone."""
    import keras

    from keras_impl import resnet50 as kr
    from keras_impl.resnet50_arm import KerasArm

    keras.utils.set_random_seed(cfg.seed)
    model = kr.build_model(n_classes, SIZE, cfg.keras, stand_in_backbone())
    return KerasArm(model, cfg, STAND_IN)


def keras_logits(arm, images: np.ndarray) -> np.ndarray:
    """The Keras arm's logits, computed eagerly (no graph to trace)."""
    import keras

    from keras_impl import model as km

    return keras.ops.convert_to_numpy(km.logits_model(arm.model)(images.astype(np.float32), training=False))


def keras_case(tiny_images, tmp_path_factory) -> ArmCase:
    """The stand-in arm trained on cached features for 2 epochs (12 training images, 6
    validation images, 2 per class in class order); it explains 2 validation images (classes
    0 and 1) against 3 training images."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    pytest.importorskip("shap")
    from keras_impl.resnet50_arm import KerasArm

    data = keras_training_data(tiny_images, cache_dir=tmp_path_factory.mktemp("keras-features"))
    arm = stand_in_arm(keras_cfg())
    result = arm.fit(data)
    return ArmCase(
        name="keras",
        arm=arm,
        data=data,
        result=result,
        epochs=2,
        images=data.x_val[::3],
        background=data.x_train[::4],
        load=lambda path: KerasArm.load(path, keras_cfg()),
        saved_files=("model.info.json", "model.keras"),
        **keras_references(arm),
        fan_ins=STAND_IN_FAN_INS,
        dtype=np.float32,
        scratch=tmp_path_factory.mktemp("keras-case"),
    )


def keras_references(arm) -> dict[str, Callable]:
    """A Keras arm's logits, gradients and state, computed by TensorFlow directly (ArmCase's fields)."""
    import tensorflow as tf

    from keras_impl import model as km

    def gradients(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        x = tf.Variable(images.astype(np.float32))
        with tf.GradientTape() as tape:
            z = km.logits_model(arm.model)(x, training=False)
            picked = tf.reduce_sum(z * tf.one_hot(classes, arm.n_classes))
        return tape.gradient(picked, x).numpy()

    state = lambda a: _numpy_state((v.path, v.numpy()) for v in a.model.weights)
    return {"logits": lambda images: keras_logits(arm, images), "gradients": gradients, "state": state}


# ------------------------------------------------------------------------------- the factorial design's arms


def keras_cnn_cfg(seed: int = 0, **settings):
    settings = {"epochs": 2, "batch_size": 16, **settings}
    return load_config(overrides={"seed": seed, **{f"keras_cnn.{k}": v for k, v in settings.items()}})


def keras_cnn_case(tiny_images, tmp_path_factory) -> ArmCase:
    """The CNN in Keras trained as the ``pytorch`` case (its data, explained images and background)."""
    pytest.importorskip("keras")
    pytest.importorskip("shap")
    from keras_impl.cnn_arm import KerasCNNArm

    data = pytorch_training_data(tiny_images)
    arm = KerasCNNArm.create(keras_cnn_cfg(epochs=TRAINED_EPOCHS, batch_size=8), n_classes=3, image_size=SIZE)
    result = arm.fit(data)
    return ArmCase(
        name="keras_cnn",
        arm=arm,
        data=data,
        result=result,
        epochs=TRAINED_EPOCHS,
        images=data.x_val[::4],
        background=data.x_train[::5],
        load=lambda path: KerasCNNArm.load(path, keras_cnn_cfg()),
        saved_files=("model.keras",),
        **keras_references(arm),
        fan_ins=CNN_FAN_INS,
        dtype=np.float32,
        scratch=tmp_path_factory.mktemp("keras-cnn-case"),
    )


# A network of ResNet50's kind, layer for layer as Keras builds it (pytorch_impl.resnet50): one
# block per stage, narrow; at SIZE its last map is 1x1 with 4 * 8 = 32 channels. A random backbone's
# features of 30 images tell the classes apart only a little: its head trains with Adam at 1e-2 and
# no dropout (the published 1e-4 and 0.5 barely move the loss in 3 epochs).
RESNET_STAND_IN = {"blocks": (1, 1, 1, 1), "widths": (8, 8, 8, 8)}


def pytorch_resnet50_cfg(seed: int = 0, **settings):
    defaults = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "dropout": 0.0, "dense_units": 16, "device": "cpu"}
    settings = {**defaults, **settings}
    return load_config(overrides={"seed": seed, **{f"pytorch_resnet50.{k}": v for k, v in settings.items()}})


def resnet_fan_ins(model) -> tuple[int, ...]:
    """The terms of one unit's sum in each convolution and dense layer of a PyTorch model, and
    the average pooling's (every layer counted: a bound for the residual paths too)."""
    from torch import nn

    fan_ins = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_ins.append(m.in_channels * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            fan_ins.append(m.in_features)
    return (*fan_ins, (SIZE // 32) ** 2)


def pytorch_resnet50_case(tiny_images, tmp_path_factory) -> ArmCase:
    """The PyTorch ResNet50 arm on :data:`RESNET_STAND_IN` (PyTorch's random backbone), its head
    trained on the backbone's features as the ``pytorch`` case's data; explained as that case."""
    pytest.importorskip("torch")
    pytest.importorskip("shap")
    import torch

    from pytorch_impl.resnet50 import build_model
    from pytorch_impl.resnet50_arm import PyTorchResNet50Arm

    cfg = pytorch_resnet50_cfg()
    settings = cfg.pytorch_resnet50
    data = pytorch_training_data(tiny_images)
    torch.manual_seed(cfg.seed)
    model = build_model(3, SIZE, settings.dense_units, settings.dropout, **RESNET_STAND_IN)
    arm = PyTorchResNet50Arm(model, cfg, STAND_IN, None)
    result = arm.fit(data)
    return ArmCase(
        name="pytorch_resnet50",
        arm=arm,
        data=data,
        result=result,
        epochs=settings.epochs,
        images=data.x_val[::4],
        background=data.x_train[::5],
        load=lambda path: PyTorchResNet50Arm.load(path, pytorch_resnet50_cfg()),
        saved_files=("model.pt",),
        **torch_references(arm),
        fan_ins=resnet_fan_ins(arm.model),
        dtype=np.float32,
        scratch=tmp_path_factory.mktemp("pytorch-resnet50-case"),
    )


# ------------------------------------------------------------------------------- the fake arm


def fake_cfg() -> Any:
    """The study config with the fake arm's section (registered only while it is read)."""
    from common import registry
    from tests.fake_arm import SPEC

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.ARMS, SPEC.key, SPEC)
        return load_config(overrides={"only": SPEC.key})


def fake_case(tiny_images, tmp_path_factory) -> ArmCase:
    """The linear NumPy arm trained for 3 full-batch epochs on 18 16x16 images (every other
    one for validation); it explains 5 of them against 6 others."""
    from tests.fake_arm.arm import FakeArm
    from tests.fake_arm.model import logits

    cfg = fake_cfg()
    x, y = tiny_images(6, FAKE_SIZE, seed=0)
    data = TrainingData(x, y, x[::2], y[::2], data_key="tiny")
    arm = FakeArm.create(cfg, n_classes=3, image_size=FAKE_SIZE)
    result = arm.fit(data)
    return ArmCase(
        name="fake",
        arm=arm,
        data=data,
        result=result,
        epochs=cfg.arm("fake").epochs,
        images=x[::4],
        background=x[1::3],
        load=lambda path: FakeArm.load(path, cfg),
        saved_files=("model.npz",),
        logits=lambda images: logits(arm.weights, arm.bias, images),
        gradients=lambda images, classes: (arm.weights[classes] / 255.0).reshape(images.shape),
        state=lambda a: {"weights": a.weights.copy(), "bias": a.bias.copy()},
        fan_ins=(FAKE_SIZE * FAKE_SIZE * 3,),
        dtype=np.float64,
        scratch=tmp_path_factory.mktemp("fake-case"),
    )
