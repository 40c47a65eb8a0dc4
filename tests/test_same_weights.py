"""One network, two frameworks: the PyTorch CNN and its Keras twin carry the same weights.

If shap's PyTorch and TensorFlow backends give the same maps for the same network, then
differences between the two arms' maps come from the models, not from shap. The CNN is
trained for a few SGD steps (so BatchNorm holds non-trivial running statistics and the
logits are not near zero), copied with ``keras_twin_of_cnn``, and explained by both arms'
``explain`` functions.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("shap")
stats = pytest.importorskip("scipy.stats")

from types import SimpleNamespace  # noqa: E402

from common.data.statistics import channel_statistics  # noqa: E402
from common.seeding import image_seeds, seeded  # noqa: E402
from keras_impl import explain as keras_explain  # noqa: E402
from keras_impl.twin import keras_twin_of_cnn  # noqa: E402
from pytorch_impl import explain as pytorch_explain  # noqa: E402
from pytorch_impl.cnn import build_model  # noqa: E402
from pytorch_impl.model import as_input, images_to_tensor  # noqa: E402
from tests.arm_cases import CNN_FAN_INS  # noqa: E402  (the CNN at 32 px: terms per unit, layer by layer)
from tests.tolerance import network_atol  # noqa: E402

pytestmark = [pytest.mark.pytorch, pytest.mark.keras]

SIZE, N_CLASSES, SEED = 32, 3, 0
TRAIN_STEPS = 20  # full-batch SGD steps on 30 images: well under a second
N_BACKGROUND = 10
GRADIENT_SAMPLES = 200
# Two frameworks' float32 kernels for one network: their logits lie within this much of max |logit|.
LOGIT_RTOL = network_atol(CNN_FAN_INS, 1.0)
# Maps: forward and backward passes, and Deep SHAP's rescale rule divides by differences of inputs,
# which can amplify rounding beyond the forward bound: a margin of about 10x LOGIT_RTOL.
MAP_RTOL = 1e-3


@pytest.fixture(scope="module")
def twins(tiny_images):
    """The briefly trained CNN and its Keras twin, with test images and a background:
    ``.torch``, ``.keras``, ``.images`` (6, 32, 32, 3) and ``.background`` (10, ...), uint8."""
    x_train, y_train = tiny_images(10, SIZE, seed=0)
    images, _ = tiny_images(2, SIZE, seed=1)
    with seeded(SEED):
        model = build_model(N_CLASSES, SIZE)
        model.normalize.set_statistics(*channel_statistics(x_train))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = as_input(images_to_tensor(x_train)), torch.as_tensor(y_train)
        model.train()  # BatchNorm updates its running statistics
        for _ in range(TRAIN_STEPS):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    state = {key: value.numpy() for key, value in model.state_dict().items()}
    twin = keras_twin_of_cnn(state, N_CLASSES, SIZE)
    background = x_train[:: len(x_train) // N_BACKGROUND][:N_BACKGROUND]  # every class
    return SimpleNamespace(torch=model, keras=twin, images=images, background=background)


def _explain(arm: str, model, twins, method: str):
    explain = pytorch_explain.explain if arm == "pytorch" else keras_explain.explain
    with seeded(SEED):  # shap reseeds NumPy's global generator; give it back afterwards
        seeds = image_seeds(SEED, twins.images)
        return explain(model, twins.images, twins.background, method, nsamples=GRADIENT_SAMPLES, seeds=seeds)


def _relative_max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |a|."""
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_twin_weights_match_the_published_layout(twins):
    names = [layer.name for layer in twins.keras.layers]
    assert names[1] == "normalize" and names[-2:] == ["logits", "probabilities"]
    bn = twins.torch.features[2]
    assert not np.allclose(bn.running_mean.numpy(), 0) and not np.allclose(bn.running_var.numpy(), 1)
    twin_bn = twins.keras.get_layer("bn1")
    np.testing.assert_array_equal(twin_bn.moving_variance.numpy(), bn.running_var.numpy())
    assert twin_bn.epsilon == bn.eps == 1e-5
    # The twin serialises (its normalisation layer is registered).
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(twins.keras))
    assert [layer.name for layer in restored.layers] == names


def test_twin_gives_the_same_logits(twins):
    with torch.no_grad():
        expected = twins.torch(as_input(images_to_tensor(twins.images))).numpy()  # (N, K)
    logits = keras.Model(twins.keras.inputs, twins.keras.get_layer("logits").output)
    actual = keras.ops.convert_to_numpy(logits([twins.images.astype(np.float32)]))
    assert np.abs(expected).max() > 1, "logits near zero: the comparison would be weak"
    assert len(set(expected.argmax(1))) > 1, "every image gets the same class: an untrained CNN"
    diff = _relative_max_diff(expected, actual)
    assert diff < LOGIT_RTOL, f"Keras twin logits differ from PyTorch's by {diff:.3g} of max |logit|"


def test_deep_shap_maps_are_equal_in_both_frameworks(twins):
    pytorch = _explain("pytorch", twins.torch, twins, "deep")
    keras_ = _explain("keras", twins.keras, twins, "deep")
    scale = np.abs(pytorch.base_values).max()
    np.testing.assert_allclose(keras_.base_values, pytorch.base_values, atol=network_atol(CNN_FAN_INS, scale))
    assert pytorch.attributions.shape == keras_.attributions.shape == (6, N_CLASSES, SIZE, SIZE, 3)
    diff = _relative_max_diff(pytorch.attributions, keras_.attributions)
    assert diff < MAP_RTOL, f"Deep SHAP maps (all classes) differ by {diff:.3g} of max |map|"


def test_gradient_shap_maps_are_equal_in_both_frameworks(twins):
    # Both backends of shap 0.51's GradientExplainer draw their samples from NumPy's global
    # generator in the same order (reseeded with rseed per class; per image and sample,
    # np.random.choice for the background row, then np.random.uniform for the point on the
    # line: shap/explainers/_gradient.py). The same seed therefore gives the same sample
    # points in both frameworks, so the maps must agree to float rounding, not just correlate.
    pytorch = _explain("pytorch", twins.torch, twins, "gradient").attributions
    keras_ = _explain("keras", twins.keras, twins, "gradient").attributions
    diff = _relative_max_diff(pytorch, keras_)
    spearman = [
        stats.spearmanr(p.sum(-1).ravel(), k.sum(-1).ravel())[0]
        for p, k in zip(pytorch.reshape(-1, SIZE, SIZE, 3), keras_.reshape(-1, SIZE, SIZE, 3), strict=True)
    ]  # per image and class, of the channel-summed maps
    assert min(spearman) > 0.99, f"Spearman of the channel-summed maps per image and class: {spearman}"
    assert diff < MAP_RTOL, f"Gradient SHAP maps (all classes) differ by {diff:.3g} of max |map|"
