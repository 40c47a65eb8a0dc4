"""One ResNet50, two frameworks: the PyTorch ResNet50 holding the Keras arm's backbone weights,
converted (``pytorch_impl/weights.py``), gives the Keras arm's logits and Deep SHAP maps.

As ``tests/test_same_weights.py`` does for the CNN: if the same network with the same weights
gives the same maps in both frameworks, what differs between the factorial design's ResNet50
arms comes from their heads' training, not from the conversion or shap's two backends.

The Keras arm is built as its ``create`` builds it (a random backbone: ``keras.weights: none``,
as offline), then its batch norms get random statistics, scales and shifts (a fresh backbone's
are 0, 1, 1, 0: their conversion would go untested) and the PyTorch network gets every weight,
the head's included. Both explain random uint8 images in float32.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("shap")

from common.seeding import image_seeds, seeded  # noqa: E402
from keras_impl import explain as keras_explain  # noqa: E402
from keras_impl import model as kmodel  # noqa: E402
from keras_impl import resnet50 as kr  # noqa: E402
from keras_impl.resnet50_arm import KerasArm  # noqa: E402
from keras_impl.weights import weights_digest  # noqa: E402
from pytorch_impl import explain as pytorch_explain  # noqa: E402
from pytorch_impl import weights  # noqa: E402
from pytorch_impl.model import as_input, images_to_tensor  # noqa: E402
from pytorch_impl.resnet50 import build_model  # noqa: E402
from tests.arm_cases import SIZE, keras_cfg, resnet_fan_ins  # noqa: E402
from tests.tolerance import network_atol  # noqa: E402

pytestmark = [pytest.mark.pytorch, pytest.mark.keras, pytest.mark.slow]

N_CLASSES, SEED = 3, 0
# Deep SHAP's rescale rule divides by differences of layer inputs, which can amplify the forward
# passes' rounding: maps are compared within 10x the network's bound on their own scale (as the
# CNN's twin is, tests/test_same_weights.py).
MAP_MARGIN = 10


@pytest.fixture(scope="module")
def keras_arm():
    """The Keras arm as ``create`` builds it at 32 px (random backbone, Keras's head initialisation)."""
    return KerasArm.create(keras_cfg(seed=SEED), n_classes=N_CLASSES, image_size=SIZE)


@pytest.fixture(scope="module")
def converted(keras_arm, tmp_path_factory):
    """The PyTorch arm's own route to the backbone (another build of the Keras arm's, same seed),
    before anything changes the Keras arm's weights."""
    cache = tmp_path_factory.mktemp("conversion")
    first = weights.converted_backbone("none", SIZE, SEED, cache)
    return SimpleNamespace(first=first, cache=cache, keras_digest=weights_digest(kr.backbone_of(keras_arm.model)))


@pytest.fixture(scope="module")
def twins(keras_arm, converted):
    """The Keras arm's model with random batch-norm statistics, and the PyTorch network carrying
    all its weights: ``.keras``, ``.torch``, ``.images`` (2 random images), ``.background`` (4)."""
    rng = np.random.default_rng(SEED)
    backbone = kr.backbone_of(keras_arm.model)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            draws = (rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape), rng.normal(0, 0.1, shape))
            layer.set_weights([*draws, rng.uniform(0.5, 1.5, shape)])  # gamma, beta, moving mean and variance
    model = build_model(N_CLASSES, SIZE)
    weights.load_backbone_state(model, weights.keras_to_torch(weights.keras_layers(backbone)))
    with torch.no_grad():  # the head: Keras's Dense (in, out) kernels are PyTorch's Linear (out, in) weights
        for linear, name in ((model.head[1], "dense"), (model.head[4], "logits")):
            kernel, bias = keras_arm.model.get_layer(name).get_weights()
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
    pixels = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    return SimpleNamespace(keras=keras_arm.model, torch=model.eval(), images=pixels[:2], background=pixels[2:])


def test_the_pytorch_arm_converts_the_keras_arms_own_backbone_once(keras_arm, converted, monkeypatch):
    first = converted.first
    assert first.digest == converted.keras_digest  # the same loader and seed: the Keras arm's very backbone
    assert first.record == keras_arm.backbone_weights == "random (none requested)"
    assert first.cache == "miss"
    cached = list((converted.cache / weights.CACHE_FOLDER).iterdir())
    assert [p.name for p in cached] == [f"{weights.CONVERSION_VERSION}-{first.digest}.npz"]
    # The same Keras weights again (the build stood in for): read from the cache, not converted again.
    monkeypatch.setattr(weights, "keras_backbone", lambda *args: (None, first.record, first.digest))
    again = weights.converted_backbone("none", SIZE, SEED, converted.cache)
    assert again.cache == "hit" and all(np.array_equal(again.state[k], v) for k, v in first.state.items())
    cached[0].write_bytes(b"damaged")
    backbone = kr.backbone_of(keras_arm.model)
    monkeypatch.setattr(weights, "keras_backbone", lambda *args: (backbone, first.record, first.digest))
    assert weights.converted_backbone("none", SIZE, SEED, converted.cache).cache == "miss"  # converted again


def test_the_networks_have_the_same_layers(twins):
    keras_convs = [layer for layer in kr.backbone_of(twins.keras).layers if isinstance(layer, keras.layers.Conv2D)]
    torch_convs = [m for m in twins.torch.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    shapes = sorted((c.kernel_size, c.strides, c.filters) for c in keras_convs)
    assert shapes == sorted((m.kernel_size, m.stride, m.out_channels) for m in torch_convs)


def test_the_converted_network_gives_the_same_logits(twins):
    with torch.no_grad():
        expected = twins.torch(as_input(images_to_tensor(twins.images))).numpy()
    actual = keras.ops.convert_to_numpy(kmodel.logits_model(twins.keras)(twins.images.astype(np.float32)))
    assert len(set(expected.argmax(1))) > 1 or np.ptp(expected) > 1, "logits that say nothing"
    # two float32 evaluations of one network: within its bound (every layer's sum) on the logits' scale
    atol = network_atol(resnet_fan_ins(twins.torch), np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def test_deep_shap_maps_are_the_same_in_both_frameworks(twins):
    classes = np.array([0, 2])  # one class per image: one traced graph on the Keras side
    explained = {}
    for name, explain, model in (
        ("pytorch", pytorch_explain.explain, twins.torch),
        ("keras", keras_explain.explain, twins.keras),
    ):
        with seeded(SEED):
            seeds = image_seeds(SEED, twins.images)
            explained[name] = explain(
                model, twins.images, twins.background, "deep", nsamples=0, seeds=seeds, classes=classes
            )
    pytorch, keras_ = explained["pytorch"], explained["keras"]
    fan_ins = resnet_fan_ins(twins.torch)
    np.testing.assert_allclose(
        keras_.base_values, pytorch.base_values, rtol=0, atol=network_atol(fan_ins, np.abs(pytorch.base_values).max())
    )
    scale = np.abs(pytorch.attributions).max()
    assert pytorch.attributions.shape == keras_.attributions.shape == (2, 1, SIZE, SIZE, 3) and scale > 0
    atol = MAP_MARGIN * network_atol(fan_ins, scale)
    np.testing.assert_allclose(keras_.attributions, pytorch.attributions, rtol=0, atol=atol)
    for e in (pytorch, keras_):  # and each adds up to its own model's logit difference
        deltas = e.outputs[[0, 1], classes] - e.base_values[classes]
        np.testing.assert_allclose(e.attributions.reshape(2, -1).sum(1), deltas, rtol=1e-4, atol=0)
