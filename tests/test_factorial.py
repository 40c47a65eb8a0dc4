"""The factorial design: each architecture in both frameworks (``design: factorial``).

Which arms a design runs, that the published study is the one it always was, that the Keras CNN
is the PyTorch CNN's architecture and recipe, and that the table of the frameworks' differing
defaults (``common.registry.FRAMEWORK_DEFAULTS``) says what the frameworks do. A tiny factorial
study end to end is ``tests/test_run_all.py``'s (on a copy of its published study).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from common import registry
from common.config import design_arms, load_config, selected_arms
from common.errors import ConfigError
from experiments import keys
from tests.fake_arm import SPEC as FAKE

PUBLISHED = ["pytorch", "keras"]
FACTORIAL = ["pytorch", "keras", "keras_cnn", "pytorch_resnet50"]


def test_an_arm_of_the_factorial_design_runs_in_that_design_only(monkeypatch):
    spec = dataclasses.replace(FAKE, design="factorial")
    monkeypatch.setitem(registry.ARMS, spec.key, spec)
    assert [s.key for s in selected_arms(load_config())] == PUBLISHED  # the default: the published study
    assert [s.key for s in selected_arms(load_config(overrides={"design": "factorial"}))][-1] == "fake"
    assert [s.key for s in selected_arms(load_config(overrides={"only": "fake"}))] == ["fake"]  # only: any arm
    # a published study's config holds the sections it always held; design is written when not the default
    published = load_config().to_dict()
    assert "design" not in published and "fake" not in published
    factorial = load_config(overrides={"design": "factorial", "fake.epochs": 2}).to_dict()
    assert factorial["design"] == "factorial" and factorial["fake"]["epochs"] == 2
    assert load_config(overrides=factorial) == load_config(overrides={"design": "factorial", "fake.epochs": 2})
    with pytest.raises(ConfigError, match="design must be one of published, factorial"):
        load_config(overrides={"design": "full"})


def test_the_published_arms_stage_keys_do_not_depend_on_the_design():
    selection = SimpleNamespace(key="selection")
    published, factorial = load_config(), load_config(overrides={"design": "factorial"})
    for key in PUBLISHED:  # a factorial study reuses a published study's stages of its arms
        spec = registry.arm_spec(key)
        assert keys.arm_keys(published, "data", selection, spec) == keys.arm_keys(factorial, "data", selection, spec)


# ------------------------------------------------------------------------------- the Keras CNN


def _row(architecture: str, setting: str) -> registry.FrameworkDefault:
    return next(r for r in registry.FRAMEWORK_DEFAULTS[architecture] if r.setting.startswith(setting))


@pytest.mark.pytorch
@pytest.mark.keras
def test_the_keras_cnn_is_the_pytorch_cnns_architecture(keras_cnn_case, pytorch_case):
    keras_model, torch_model = keras_cnn_case.arm.model, pytorch_case.arm.model
    torch_shapes = [tuple(p.shape) for p in torch_model.parameters()]
    # Keras's kernels: conv HWIO for PyTorch's OIHW, dense (in, out) for (out, in)
    keras_shapes = []
    for w in keras_model.trainable_weights:
        shape = tuple(w.shape)
        keras_shapes.append((shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1])
    assert keras_shapes == torch_shapes
    assert keras_cnn_case.arm.info()["flatten_width"] == pytorch_case.arm.info()["flatten_width"] == 576
    # the first layer normalises with the training split's channel statistics, as the PyTorch CNN's
    mean, std = (keras_model.get_layer("normalize").get_weights()[i] for i in (0, 1))
    np.testing.assert_allclose(mean, torch_model.normalize.mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(std, torch_model.normalize.std.numpy(), rtol=1e-6)


@pytest.mark.keras
def test_the_keras_cnn_trains_with_the_pytorch_cnns_recipe_in_keras_terms(tiny_images):
    cfg = load_config()
    keras_cnn, pytorch = cfg.arm("keras_cnn"), cfg.arm("pytorch")
    for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "hflip"):
        assert getattr(keras_cnn, name) == getattr(pytorch, name), name
    # random flips train through a wrapper, outside the saved model
    from keras_impl.cnn_arm import KerasCNNArm
    from tests.arm_cases import keras_cnn_cfg, pytorch_training_data

    arm = KerasCNNArm.create(keras_cnn_cfg(epochs=1, hflip=True), n_classes=3, image_size=32)
    assert len(arm.fit(pytorch_training_data(tiny_images)).history["train_loss"]) == 1
    assert "hflip" not in [layer.name for layer in arm.model.layers]


@pytest.mark.pytorch
@pytest.mark.keras
def test_the_cnns_defaults_table_says_what_the_frameworks_do(keras_cnn_case, pytorch_case):
    import keras
    import torch

    bn_keras, bn_torch = keras_cnn_case.arm.model.get_layer("bn1"), pytorch_case.arm.model.features[2]
    row = _row("CNN", "batch norm's epsilon")
    assert (bn_torch.eps, bn_keras.epsilon) == (float(row.pytorch), float(row.keras)) == (1e-5, 1e-3)
    assert (bn_torch.momentum, bn_keras.momentum) == (0.1, 0.99)
    assert type(keras_cnn_case.arm.model.get_layer("conv1").kernel_initializer).__name__ == "GlorotUniform"
    assert "Glorot" in _row("CNN", "convolution").keras and "Kaiming" in _row("CNN", "convolution").pytorch
    # Batch norm's running variance: unbiased in PyTorch, biased in Keras (one training step each).
    x = np.random.default_rng(0).normal(size=(8, 1, 1, 1)).astype(np.float32)
    torch_bn, keras_bn = torch.nn.BatchNorm2d(1, momentum=1.0).train(), keras.layers.BatchNormalization(momentum=0.0)
    torch_bn(torch.from_numpy(x))
    keras_bn(x, training=True)
    assert np.isclose(torch_bn.running_var.item(), x.var(ddof=1))
    assert np.isclose(keras_bn.moving_variance.numpy(), x.var())


@pytest.mark.pytorch
@pytest.mark.keras
def test_sgd_weight_decay_runs_through_the_momentum_in_pytorch_and_not_in_keras():
    import keras
    import torch

    lr, momentum, decay = 0.1, 0.9, 0.5
    w = torch.nn.Parameter(torch.ones(1))
    sgd = torch.optim.SGD([w], lr=lr, momentum=momentum, weight_decay=decay)
    v = keras.Variable(np.ones(1, np.float32))
    keras_sgd = keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=decay)
    for _ in range(2):  # zero gradients: only the decay moves the weights
        w.grad = torch.zeros(1)
        sgd.step()
        keras_sgd.apply_gradients([(keras.ops.zeros(1), v)])
    coupled = 1 - lr * decay  # step 1; step 2 adds the momentum of step 1's decay term
    coupled = coupled - lr * (momentum * decay + decay * coupled)
    assert np.isclose(w.item(), coupled) and np.isclose(v.numpy()[0], (1 - lr * decay) ** 2)
    row = _row("CNN", "SGD's weight decay")
    assert row.pytorch.startswith("coupled") and row.keras.startswith("decoupled")


# ------------------------------------------------------------------------------- the four arms


def test_the_factorial_design_is_each_architecture_in_each_framework():
    assert [s.key for s in selected_arms(load_config(overrides={"design": "factorial"}))] == FACTORIAL
    assert [s.key for s in design_arms("published")] == PUBLISHED
    cells = [(s.framework, s.architecture) for s in design_arms("factorial")]
    assert sorted(cells) == sorted((f, a) for f in ("PyTorch", "Keras") for a in registry.ARCHITECTURES)
    assert set(registry.FRAMEWORK_DEFAULTS) == set(registry.ARCHITECTURES)
    published = load_config().to_dict()
    assert "keras_cnn" not in published and "pytorch_resnet50" not in published
    # one arm of the factorial design alone: its section, and the Keras section its backbone comes from
    alone = load_config(overrides={"only": "pytorch_resnet50", "keras.weights": "none"}).to_dict()
    assert alone["pytorch_resnet50"] and alone["keras"]["weights"] == "none"


def test_the_pytorch_resnet50_is_keyed_by_the_keras_weights_it_converts():
    selection, spec = SimpleNamespace(key="selection"), registry.arm_spec("pytorch_resnet50")
    imagenet = keys.arm_keys(load_config(overrides={"design": "factorial"}), "data", selection, spec)
    random = keys.arm_keys(load_config(overrides={"keras.weights": "none"}), "data", selection, spec)
    assert imagenet["train"] != random["train"]
    on_gpu = keys.arm_keys(load_config(overrides={"pytorch_resnet50.device": "cuda"}), "data", selection, spec)
    assert on_gpu["train"] == imagenet["train"]  # where it runs is not what it computes


@pytest.mark.pytorch
@pytest.mark.keras
def test_the_resnet50s_adam_defaults_are_the_tables():
    import keras
    import torch

    row = _row("ResNet50", "Adam's epsilon")
    adam_eps = (torch.optim.Adam([torch.zeros(1)]).defaults["eps"], keras.optimizers.Adam().epsilon)
    assert adam_eps == (float(row.pytorch), float(row.keras)) == (1e-8, 1e-7)
    assert (
        "Glorot" in _row("ResNet50", "head's kernels").keras and "Kaiming" in _row("ResNet50", "head's kernels").pytorch
    )
