"""The PyTorch arm on tiny 32x32 images: what is PyTorch's own in architecture, training,
saving and SHAP maps.

What every arm must do is checked over every arm in ``tests/test_arm_contract.py``. The
tiny CNN is trained once per session (``pytorch_case``, ``tests/arm_cases.py``); the tests
that only read a trained model share it and must not change it. Only the tests of training
itself train.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
shap = pytest.importorskip("shap")

from torch import nn  # noqa: E402

from common.arm import TrainingData  # noqa: E402
from common.data.imagestore import ImageStore, create_store, write_rows  # noqa: E402
from common.data.statistics import channel_statistics  # noqa: E402
from common.quality.agreement import rank_correlation  # noqa: E402
from pytorch_impl.cnn import build_model, flatten_width  # noqa: E402
from pytorch_impl.cnn_arm import PyTorchArm  # noqa: E402
from pytorch_impl.explain import shap_to_explanation_layout  # noqa: E402
from pytorch_impl.model import images_to_tensor  # noqa: E402
from pytorch_impl.train import evaluate, resolve_device, train  # noqa: E402
from tests.arm_cases import CNN_FAN_INS, SIZE, pytorch_cfg, pytorch_training_data  # noqa: E402
from tests.tolerance import gamma, network_atol  # noqa: E402

pytestmark = pytest.mark.pytorch

NONLINEAR = (nn.ReLU, nn.MaxPool2d, nn.Softmax)


# --- model ---------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "width"), [(12, 16), (32, 576), (64, 3_136), (224, 46_656)])
def test_flatten_width_matches_a_forward_pass(size, width):
    model = build_model(n_classes=3, image_size=size).eval()
    with torch.no_grad():
        features = model.features(model.normalize(torch.zeros(1, 3, size, size)))
        logits = model(torch.zeros(2, 3, size, size))
    assert flatten_width(size) == width == features.shape[1]
    assert model.classifier[0].in_features == width
    assert logits.shape == (2, 3)


def test_flatten_width_rejects_too_small_images():
    with pytest.raises(ValueError, match="too small"):
        flatten_width(11)


def test_architecture_is_the_published_one():
    model = build_model(n_classes=5, image_size=SIZE)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (5, 5)), (6, 16, (3, 3))]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(576, 120), (120, 84), (84, 5)]
    kinds = [type(m).__name__ for m in model.features] + [type(m).__name__ for m in model.classifier]
    assert kinds == [
        "Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", "Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", "Flatten",
        "Linear", "ReLU", "Linear", "ReLU", "Linear",
    ]  # fmt: skip


def test_every_nonlinearity_is_a_module_leaf_used_once():
    model = build_model(n_classes=3, image_size=SIZE)
    modules = [m for _, m in model.named_modules(remove_duplicate=False)]
    assert len({id(m) for m in modules}) == len(modules), "a module object appears twice"
    for m in modules:
        if isinstance(m, NONLINEAR):
            assert not list(m.children())
        assert not getattr(m, "inplace", False), f"in-place {type(m).__name__}"

    # The traced forward calls each leaf module once and no functional op other than the
    # affine normalisation ((x - mean) / std): no F.relu, F.max_pool2d, torch.softmax.
    # (fx inlines our own Normalize module; torch.nn's modules stay calls.)
    graph = torch.fx.symbolic_trace(model).graph
    called = [n.target for n in graph.nodes if n.op == "call_module"]
    leaves = [name for name, m in model.named_modules() if not list(m.children()) and name != "normalize"]
    assert sorted(called) == sorted(leaves)
    functions = {n.target for n in graph.nodes if n.op == "call_function"}
    assert functions <= {operator.getitem, operator.sub, operator.truediv}
    assert not [n for n in graph.nodes if n.op == "call_method"]


def test_model_normalises_with_training_statistics(pytorch_case):
    arm, data = pytorch_case.arm, pytorch_case.data
    pixels = data.x_train.reshape(-1, 3).astype(np.float64)
    state = arm.model.state_dict()
    assert state["normalize.mean"].dtype == state["normalize.std"].dtype == torch.float32
    np.testing.assert_allclose(state["normalize.mean"].numpy(), pixels.mean(0).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(state["normalize.std"].numpy(), pixels.std(0).astype(np.float32), rtol=1e-6)
    # The first layer turns the raw training pixels into zero-mean, unit-std channels.
    normalised = arm.model.normalize(images_to_tensor(data.x_train).float())
    # float32 means over n values per channel: within gamma(n) * mean |value| of the exact ones
    n = len(data.x_train) * SIZE * SIZE
    scale = float(normalised.abs().mean()) + float((normalised**2).mean())
    np.testing.assert_allclose(normalised.mean((0, 2, 3)).numpy(), 0, atol=gamma(n) * scale)
    np.testing.assert_allclose(normalised.std((0, 2, 3), correction=0).numpy(), 1, atol=gamma(n) * scale)


def test_channel_statistics_guard_a_constant_channel():
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    images[..., 0] = 7
    images[:2, ..., 1] = 255
    mean, std = channel_statistics(images)
    np.testing.assert_allclose(mean, [7, 127.5, 0])
    np.testing.assert_allclose(std, [0, 127.5, 0])
    model = build_model(n_classes=3, image_size=SIZE)
    model.normalize.set_statistics(mean, std)
    assert model.normalize.std.tolist() == [1.0, 127.5, 1.0]


def test_images_to_tensor_is_nchw_and_rejects_other_input():
    images = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    t = images_to_tensor(images)
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 4, 5)
    assert t[1, 2, 3, 4].item() == images[1, 3, 4, 2]
    with pytest.raises(ValueError):
        images_to_tensor(images.astype(np.float32))


# --- training -------------------------------------------------------------------------


def test_one_epoch_lowers_the_training_loss(tiny_images):
    cfg = pytorch_cfg(epochs=1, batch_size=8)
    x, y = tiny_images(20, SIZE, seed=0)
    torch.manual_seed(0)
    model = build_model(n_classes=3, image_size=SIZE)
    model.normalize.set_statistics(*channel_statistics(x))
    y_t = torch.as_tensor(y)
    before, _ = evaluate(model, x, y_t, batch_size=64)  # NHWC images; each step gathers its batch
    history = train(model, x, y_t, x, y_t, cfg.pytorch, seed=0)
    after, _ = evaluate(model, x, y_t, batch_size=64)
    assert after < before
    assert history["val_loss"] == [pytest.approx(after)]  # validation ran in eval mode too


def test_training_from_the_on_disk_store_equals_training_from_arrays(tiny_images, tmp_path):
    # The study's splits are stores read a batch at a time; arrays held whole are how it trained before.
    data = pytorch_training_data(tiny_images)
    path = tmp_path / "images.npy"
    offset = create_store(path, len(data.x_train) + len(data.x_val), data.x_train.shape[1:])
    write_rows(path, offset, dict(enumerate(np.concatenate([data.x_train, data.x_val]))))
    store = ImageStore(path)
    n = len(data.x_train)
    x_train, x_val = store.subset(np.arange(n)), store.subset(np.arange(n, len(store)))
    lazy = TrainingData(x_train, data.y_train, x_val, data.y_val, data_key="tiny")
    cfg = pytorch_cfg(epochs=2, batch_size=8, hflip=True)
    a, b = PyTorchArm.create(cfg, 3, SIZE), PyTorchArm.create(cfg, 3, SIZE)
    assert a.fit(data).history == b.fit(lazy).history
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    assert np.array_equal(a.predict_proba(data.x_val), b.predict_proba(lazy.x_val))


def test_fit_records_the_device_and_the_cnns_facts(pytorch_case):
    arm, result = pytorch_case.arm, pytorch_case.result
    assert result.info["device"] == "cpu"
    assert not arm.model.training
    info = arm.info()
    assert info["flatten_width"] == 576 and info["device"] == "cpu"
    assert info["n_parameters"] == sum(p.numel() for p in arm.model.parameters())


@pytest.mark.parametrize("hflip", [False, True])
def test_same_seed_gives_identical_weights_and_history(tiny_images, hflip):
    data = pytorch_training_data(tiny_images, n_per_class=4, n_val_per_class=2)  # 12 images: 3 batches of 4
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # what ran before must not matter
        arm = PyTorchArm.create(pytorch_cfg(seed=7, hflip=hflip, batch_size=4), n_classes=3, image_size=SIZE)
        runs.append((arm.fit(data).history, arm.model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1 == h2
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)

    other = PyTorchArm.create(pytorch_cfg(seed=8, hflip=hflip, batch_size=4), n_classes=3, image_size=SIZE)
    other.fit(data)
    assert not torch.equal(other.model.state_dict()["features.0.weight"], s1["features.0.weight"])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="CUDA is not available"):
            assert resolve_device("cuda").type == "cpu"


# --- saving ---------------------------------------------------------------------------------------


def test_a_checkpoint_holds_the_model_arguments(pytorch_case, tmp_path):
    pytorch_case.arm.save(tmp_path / "model.pt")
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["model_args"] == {"n_classes": 3, "image_size": SIZE}


# --- shap's layout and our conversion ------------------------------------------------------


def test_layout_conversion_moves_class_axis_and_channels():
    n, c, h, w, k = 2, 3, 4, 5, 6
    values = np.arange(n * c * h * w * k, dtype=np.float64).reshape(n, c, h, w, k)
    expected = np.empty((n, k, h, w, c), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            for y in range(h):
                for x in range(w):
                    for ch in range(c):
                        expected[i, j, y, x, ch] = values[i, ch, y, x, j]
    converted = shap_to_explanation_layout(values)
    assert converted.dtype == np.float32 and converted.flags.c_contiguous
    assert np.array_equal(converted, expected)
    with pytest.raises(TypeError):
        shap_to_explanation_layout([values[..., 0]] * k)  # shap < 0.45: one array per class
    with pytest.raises(ValueError):
        shap_to_explanation_layout(values[..., 0])


@pytest.mark.parametrize("method", ["deep", "gradient"])
def test_shap_returns_n_c_h_w_k_for_an_nchw_model(method):
    # K = 4 classes, C = 3 channels, H = W = 16: every axis but H/W tells itself apart.
    model = build_model(n_classes=4, image_size=16).eval()
    x, background = torch.rand(2, 3, 16, 16) * 255, torch.rand(5, 3, 16, 16) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "deep":
            values = shap.DeepExplainer(model, background).shap_values(x)
        else:
            values = shap.GradientExplainer(model, background).shap_values(x, nsamples=4, rseed=0)
    assert isinstance(values, np.ndarray)
    assert values.shape == (2, 3, 16, 16, 4)


# --- explanations -----------------------------------------------------------------------------


def test_explaining_leaves_the_arms_model_in_its_mode(pytorch_case):
    arm, data = pytorch_case.arm, pytorch_case.data
    model = arm.model
    model.train()
    try:
        arm.explain(data.x_val[:1], data.x_train[::8], "deep", nsamples=0, seed=0)
        assert model.training  # the explainer worked on a copy
    finally:
        model.eval()


def test_captum_cross_check_agrees_with_shap(pytorch_case):
    arm, images, background = pytorch_case.arm, pytorch_case.images, pytorch_case.background
    classes = arm.predict_proba(images).argmax(1)
    ours = arm.explain(images, background, "deep", nsamples=0, seed=0, classes=classes)
    theirs = arm.explain_independently(images, background, "deep", nsamples=0, seed=0, classes=classes)
    assert theirs is not None and theirs.attributions.shape == ours.attributions.shape
    diff = np.abs(theirs.attributions - ours.attributions).max() / np.abs(ours.attributions).max()
    assert diff < 1e-4, diff  # the same estimator (DeepLIFT rescale averaged over the background)
    grad = arm.explain_independently(images, background, "gradient", nsamples=200, seed=0, classes=classes)
    ours_grad = arm.explain(images, background, "gradient", nsamples=200, seed=0, classes=classes)
    rho = rank_correlation(grad.attributions.sum(-1), ours_grad.attributions.sum(-1))
    assert (rho > 0.8).all(), rho  # Monte Carlo on both sides: close, not equal
    assert arm.explain_independently(images, background, "gradinput", nsamples=0, seed=0, classes=classes) is None


@pytest.mark.parametrize("method", ["deep", "gradient"])
def test_explaining_the_predicted_class_runs_a_third_of_the_passes_of_every_class(pytorch_case, method):
    """explain.classes: predicted really explains one output (rows through the model with
    gradients on, counted by a hook that shap's private copies of the model keep; the
    forward passes without gradients give the outputs and base values), with the same maps."""
    arm, data = pytorch_case.arm, pytorch_case.data
    images, background = data.x_val[::4], data.x_train[::5]  # 3 images, 3 classes
    rows = [0]

    def count(module, args, out):
        if torch.is_grad_enabled():
            rows[0] += len(out)

    handle = arm.model.features.register_forward_hook(count)
    try:
        every = arm.explain(images, background, method, nsamples=8, seed=0)
        rows_every, rows[0] = rows[0], 0
        predicted = every.probabilities.argmax(1)
        one = arm.explain(images, background, method, nsamples=8, seed=0, classes=predicted)
        rows_one = rows[0]
    finally:
        handle.remove()
    assert rows_every > 0 and rows_one < 0.5 * rows_every, (rows_one, rows_every)
    np.testing.assert_allclose(  # the same maps through differently composed passes
        one.attributions[:, 0],
        every.attributions[np.arange(3), predicted],
        atol=network_atol(CNN_FAN_INS, np.abs(every.attributions).max()),
    )


class _Payload:
    """A pickle that runs code when loaded: what a hostile model.pt would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_saved_model_is_loaded_as_weights_only(tmp_path):
    path, marker = tmp_path / "model.pt", tmp_path / "pwned"
    torch.save({"model_args": {"n_classes": 2, "image_size": 32}, "state_dict": {}, "x": _Payload(marker)}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        PyTorchArm.load(path, pytorch_cfg())
    assert not marker.exists()  # the payload never ran
