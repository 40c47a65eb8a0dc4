"""Deep SHAP and Gradient SHAP against answers known in closed form, in both arms.

- A linear model (logits = W · flatten(pixels) + b): Deep SHAP must equal
  ``W[k, p] * (x_p - mean(background)_p)`` at every pixel p and class k. Gradient SHAP
  (expected gradients) sees the constant gradient W at every sample, so it must equal
  ``W[k, p] * (x_p - mean of the background rows it drew)`` exactly, and converge to the
  Deep SHAP value as the number of samples grows.
- A patch model (conv → ReLU → dense reading only the conv outputs whose receptive field
  lies in one 4x4 patch): its output depends on the patch alone, so no map may put any
  mass outside the patch.

Each framework's expected value is computed from that model's own weights in its own
layout (PyTorch flattens NCHW, Keras NHWC), then moved to the common (N, K, H, W, C).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("shap")

from torch import nn  # noqa: E402

from common.seeding import image_seeds, seeded  # noqa: E402
from keras_impl import explain as keras_explain  # noqa: E402
from pytorch_impl import explain as pytorch_explain  # noqa: E402
from tests.tolerance import sum_atol  # noqa: E402

pytestmark = [pytest.mark.pytorch, pytest.mark.keras]

SIZE, C, K = 8, 3, 3  # 8x8 RGB images, 3 classes
N_IMAGES, N_BACKGROUND = 3, 8
SEED = 0
PATCH = (slice(2, 6), slice(3, 7))  # rows 2..5, columns 3..6: the 4x4 patch the patch model reads
CENTRES = (slice(3, 5), slice(4, 6))  # the conv outputs whose 3x3 receptive field is exactly PATCH
HIDDEN = 4  # conv channels of the patch model


@pytest.fixture(scope="module")
def pixels():
    """uint8 images (N, H, W, C) and background (B, H, W, C), uniform noise."""
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (N_IMAGES, SIZE, SIZE, C), dtype=np.uint8)
    background = rng.integers(0, 256, (N_BACKGROUND, SIZE, SIZE, C), dtype=np.uint8)
    return images, background


def _explain(arm: str, model, images, background, method: str, nsamples: int = 0, batch_size: int = 50):
    explain = pytorch_explain.explain if arm == "pytorch" else keras_explain.explain
    with seeded(SEED):  # shap reseeds NumPy's global generator; give it back afterwards
        seeds = image_seeds(SEED, images)
        return explain(model, images, background, method, nsamples=nsamples, seeds=seeds, batch_size=batch_size)


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str, relative_atol: float = 1e-5) -> None:
    """Float32 tolerance: ``relative_atol`` times the largest expected value, plus rtol 1e-4."""
    scale = float(np.abs(expected).max())
    err = float(np.abs(actual - expected).max())
    assert scale > 0, f"{what}: the expected map is all zeros; the test would prove nothing"
    np.testing.assert_allclose(
        actual, expected, rtol=1e-4, atol=relative_atol * scale, err_msg=f"{what}: max |diff| {err:.3g} of {scale:.3g}"
    )


def _logits(arm: str, model, images: np.ndarray) -> np.ndarray:
    """The model's logits (N, K) for uint8 NHWC ``images``."""
    x = images.astype(np.float32)
    if arm == "pytorch":
        with torch.no_grad():
            return model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()  # NCHW
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    return keras.ops.convert_to_numpy(logits([x]))


# --- the linear model ---------------------------------------------------------------------


def linear_model(arm: str):
    """``logits = W · flatten(x) + b`` on raw pixels, random seeded W and b."""
    rng = np.random.default_rng(SEED + 1)
    w = rng.normal(0, 0.05, (K, SIZE * SIZE * C)).astype(np.float32)  # (K, P), P in the arm's flatten order
    b = rng.normal(0, 1, K).astype(np.float32)
    if arm == "pytorch":
        model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE * C, K))  # flattens (C, H, W)
        with torch.no_grad():
            model[1].weight.copy_(torch.from_numpy(w))
            model[1].bias.copy_(torch.from_numpy(b))
        return model.eval()
    pixels = keras.Input((SIZE, SIZE, C), name="pixels")
    logits = keras.layers.Dense(K, name="logits")(keras.layers.Flatten(name="flatten")(pixels))  # flattens (H, W, C)
    model = keras.Model(pixels, keras.layers.Softmax(name="probabilities")(logits))
    model.get_layer("logits").set_weights([w.T, b])  # Keras kernels are (in, out)
    return model


def pixel_weights(arm: str, model) -> np.ndarray:
    """W of the linear ``model`` as float64 (K, H, W, C), read in the model's own layout."""
    if arm == "pytorch":
        w = model[1].weight.detach().numpy().astype(np.float64)  # (K, C*H*W), columns in (C, H, W) order
        return w.reshape(K, C, SIZE, SIZE).transpose(0, 2, 3, 1)  # (K, H, W, C)
    kernel = model.get_layer("logits").get_weights()[0].astype(np.float64)  # (H*W*C, K), rows in (H, W, C) order
    return np.moveaxis(kernel.reshape(SIZE, SIZE, C, K), -1, 0)  # (K, H, W, C)


def linear_shap(weights: np.ndarray, images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``W[k, p] * (x_p - reference_p)`` as (N, K, H, W, C); ``reference`` is (H, W, C) or (N, H, W, C)."""
    delta = images.astype(np.float64) - np.broadcast_to(reference, images.shape)  # (N, H, W, C)
    return weights[None] * delta[:, None]


def drawn_background_rows(seeds: np.ndarray, n_background: int, nsamples: int) -> np.ndarray:
    """The background rows shap 0.51's GradientExplainer draws, (N, nsamples), when each
    image is explained in its own call with ``rseed=seeds[i]`` (as both arms do).

    It seeds NumPy's global generator with ``rseed`` before each class and then, for each
    image in order and each sample, draws ``np.random.choice(B)`` then ``np.random.uniform()``
    (``shap/explainers/_gradient.py``, both the TF and the PyTorch explainer).
    """
    rows = np.empty((len(seeds), nsamples), dtype=np.int64)
    for j, seed in enumerate(seeds):
        rs = np.random.RandomState(int(seed))
        for k in range(nsamples):
            rows[j, k] = rs.choice(n_background)
            rs.uniform()  # the interpolation point t: irrelevant when the gradient is constant
    return rows


@pytest.mark.parametrize("arm", ["pytorch", "keras"])
def test_deep_shap_of_a_linear_model_is_w_times_x_minus_mean_background(arm, pixels):
    images, background = pixels
    model = linear_model(arm)
    result = _explain(arm, model, images, background, "deep")
    expected = linear_shap(pixel_weights(arm, model), images, background.astype(np.float64).mean(0))
    assert result.attributions.shape == (N_IMAGES, K, SIZE, SIZE, C)
    _assert_close(result.attributions, expected, f"{arm} Deep SHAP of W·x + b")
    # The map and the model agree: sum of the map = f(x) - E[f(background)]. Both sides are float32 sums of
    # the D = H*W*C pixels' terms (the map's, and the model's dot products for f(x) and the background's):
    # tests/tolerance.py bounds each by its terms' absolute values.
    weights, d = pixel_weights(arm, model), SIZE * SIZE * C
    model_terms = np.abs(weights[None]) * np.maximum(images, background.max(0)).astype(np.float64)[:, None]
    atol = sum_atol(d, np.abs(result.attributions).sum((2, 3, 4))) + 2 * sum_atol(d, model_terms.sum((2, 3, 4)))
    np.testing.assert_array_less(
        np.abs(result.attributions.sum((2, 3, 4)) + result.base_values - result.outputs), atol + sum_atol(3, atol)
    )


@pytest.mark.parametrize("arm", ["pytorch", "keras"])
def test_gradient_shap_of_a_linear_model_is_exact_for_the_rows_it_drew_and_converges(arm, pixels):
    images, background = pixels
    model = linear_model(arm)
    weights = pixel_weights(arm, model)
    bg = background.astype(np.float64)
    exact = linear_shap(weights, images, bg.mean(0))  # what Deep SHAP gives, the limit

    errors = {}
    for nsamples in (8, 2000):
        maps = _explain(arm, model, images, background, "gradient", nsamples, batch_size=500).attributions
        # With a constant gradient every sample is W·(x - background row): the map is W times
        # x minus the mean of the rows drawn, whatever the interpolation points were.
        rows = drawn_background_rows(image_seeds(SEED, images), N_BACKGROUND, nsamples)  # (N, nsamples)
        # shap's TF explainer averages float32 samples one after another (PyTorch's samples are
        # float64): allow that sum's worst case, nsamples float32 roundings (2.4e-4 of the
        # largest value at 2000 samples; measured here: 1.5e-4 absolute, about 1e-5 relative).
        drawn = linear_shap(weights, images, bg[rows].mean(1))
        float32_sum = max(1e-5, nsamples * float(np.finfo(np.float32).eps))
        _assert_close(maps, drawn, f"{arm} Gradient SHAP, {nsamples} samples", relative_atol=float32_sum)
        errors[nsamples] = float(np.abs(maps - exact).max() / np.abs(exact).max())

    # Converges to W·(x - mean(background)): a few samples miss it, many come close.
    assert errors[8] > 0.05, f"8 samples already within {errors[8]:.3g} of the limit: the test proves nothing"
    assert errors[2000] < 0.05 and errors[2000] < errors[8] / 4, f"relative max errors by nsamples: {errors}"


# --- the patch model ------------------------------------------------------------------------


def patch_model(arm: str):
    """Conv(3→4, 3, same padding) → ReLU → Dense(K) reading only the conv outputs centred in
    ``CENTRES``, whose 3x3 receptive fields cover exactly ``PATCH``: the logits depend on the
    4x4 patch alone, nonlinearly."""
    rng = np.random.default_rng(SEED + 2)
    conv = rng.normal(0, 0.05, (3, 3, C, HIDDEN)).astype(np.float32)  # HWIO
    conv_bias = rng.normal(0, 1, HIDDEN).astype(np.float32)
    dense = np.zeros((SIZE, SIZE, HIDDEN, K), dtype=np.float32)  # (H, W, hidden, K)
    dense[CENTRES] = rng.normal(0, 1, dense[CENTRES].shape)
    dense_bias = rng.normal(0, 1, K).astype(np.float32)
    if arm == "pytorch":
        model = nn.Sequential(
            nn.Conv2d(C, HIDDEN, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(SIZE * SIZE * HIDDEN, K)
        )
        with torch.no_grad():
            model[0].weight.copy_(torch.from_numpy(conv.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
            model[0].bias.copy_(torch.from_numpy(conv_bias))
            # PyTorch flattens (hidden, H, W): the Linear weight is (K, hidden*H*W).
            model[3].weight.copy_(torch.from_numpy(dense.transpose(3, 2, 0, 1).reshape(K, -1)))
            model[3].bias.copy_(torch.from_numpy(dense_bias))
        return model.eval()
    pixels = keras.Input((SIZE, SIZE, C), name="pixels")
    x = keras.layers.Conv2D(HIDDEN, 3, padding="same", activation="relu", name="conv")(pixels)
    logits = keras.layers.Dense(K, name="logits")(keras.layers.Flatten(name="flatten")(x))  # flattens (H, W, hidden)
    model = keras.Model(pixels, keras.layers.Softmax(name="probabilities")(logits))
    model.get_layer("conv").set_weights([conv, conv_bias])
    model.get_layer("logits").set_weights([dense.reshape(-1, K), dense_bias])
    return model


@pytest.mark.parametrize("method", ["deep", "gradient"])
@pytest.mark.parametrize("arm", ["pytorch", "keras"])
def test_a_model_that_reads_one_patch_gets_maps_inside_that_patch_only(arm, method, pixels):
    images, background = pixels
    model = patch_model(arm)

    # The premise: changing every pixel outside the patch leaves the logits unchanged.
    outside_changed = images.copy()
    outside_changed[:, : PATCH[0].start] = background[0, : PATCH[0].start]
    outside_changed[:, PATCH[0].stop :] = background[0, PATCH[0].stop :]
    outside_changed[:, :, : PATCH[1].start] = background[0, :, : PATCH[1].start]
    outside_changed[:, :, PATCH[1].stop :] = background[0, :, PATCH[1].stop :]
    assert not np.array_equal(outside_changed, images)
    np.testing.assert_allclose(_logits(arm, model, outside_changed), _logits(arm, model, images), rtol=1e-6, atol=1e-6)

    maps = _explain(arm, model, images, background, method, nsamples=200).attributions  # (N, K, H, W, C)
    in_patch = np.zeros((SIZE, SIZE), dtype=bool)
    in_patch[PATCH] = True
    mass = np.abs(maps.sum(-1))  # (N, K, H, W): channel-summed |map|
    inside_fraction = mass[:, :, in_patch].sum(-1) / mass.sum((2, 3))  # (N, K)
    assert (inside_fraction > 0.99).all(), f"{arm} {method}: fractions of |map| in the patch {inside_fraction}"
    # The gradient with respect to a pixel outside the patch is exactly zero, and Deep SHAP's
    # multipliers and Gradient SHAP's samples are products with it: exactly zero, not just small.
    outside = maps[:, :, ~in_patch]  # (N, K, pixels outside, C)
    assert (outside == 0).all(), f"{arm} {method}: max |map| outside the patch {np.abs(outside).max():.3g}"
