"""The Keras arm on tiny 32x32 images: what is Keras's own in the backbone weights, training
routes, saving and SHAP maps.

What every arm must do is checked over every arm in ``tests/test_arm_contract.py``.
ResNet50 is slow to build and to trace on a CPU, so it appears only where it is the
point (the architecture and the ops Deep SHAP must handle, loading backbone weights,
Keras's own ImageNet download and cache). Everywhere else the arm wraps a small
stand-in backbone (``stand_in_arm``, ``tests/arm_cases.py``: two Conv2D/BatchNorm/ReLU/MaxPool
blocks in a Functional model named "resnet50", under the same head), and one such arm is
trained once per session (``keras_case``) for the tests that only read a trained model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
shap = pytest.importorskip("shap")

from shap.explainers._deep.deep_tf import op_handlers  # noqa: E402

import keras_impl  # noqa: E402
from common.arm import HISTORY_KEYS, TrainingData  # noqa: E402
from common.config import load_config  # noqa: E402
from common.data.imagestore import ImageStore, create_store, write_rows  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from keras_impl import model as kmodel  # noqa: E402
from keras_impl import resnet50 as km  # noqa: E402
from keras_impl import transfer as kt  # noqa: E402
from keras_impl.explain import shap_to_explanation_layout  # noqa: E402
from keras_impl.resnet50_arm import KerasArm  # noqa: E402
from keras_impl.weights import RANDOM_UNAVAILABLE, BackboneWeightsWarning, load_backbone  # noqa: E402
from tests.arm_cases import (  # noqa: E402
    BACKBONE_FAN_INS,
    SIZE,
    STAND_IN,
    STAND_IN_FAN_INS,
    STAND_IN_WIDTH,
    keras_cfg,
    keras_logits,
    keras_training_data,
    stand_in_arm,
    stand_in_backbone,
)
from tests.tolerance import network_atol, softmax_atol  # noqa: E402

pytestmark = pytest.mark.keras

REPO = Path(__file__).resolve().parents[1]
NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"  # the name Keras downloads and caches
NO_INPUT_DEPENDENCE = {"Const", "NoOp", "Placeholder", "ReadVariableOp"}  # graph ops shap need not handle
TRAINING_STEPS = 2 * 3  # the shared arm's training: 2 epochs of 3 batches


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v))
        for u, v in zip(a.weights, b.weights, strict=True)
    )


@pytest.fixture(scope="module")
def resnet_arm():
    """An untrained arm with the real (randomly initialised) ResNet50, as ``create`` builds it."""
    return KerasArm.create(keras_cfg(), n_classes=3, image_size=SIZE)


# --- model ---------------------------------------------------------------------------------


def test_preprocess_layer_is_resnet50_preprocess_input_and_serialisable():
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)
    layer = km.ResNet50Preprocess()
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is km.ResNet50Preprocess


def test_architecture_and_every_op_is_one_shap_handles(resnet_arm):
    model = resnet_arm.model
    assert resnet_arm.backbone_weights == resnet_arm.info()["backbone_weights"] == "random (none requested)"
    names = [layer.name for layer in model.layers]
    assert names == [
        "pixels",
        "preprocess",
        "resnet50",
        "pool",
        "flatten",
        "dense",
        "dropout",
        "logits",
        "probabilities",
    ]
    assert not km.backbone_of(model).trainable
    assert model.get_layer("dense").units == 256 and model.get_layer("dense").activation.__name__ == "relu"
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert model.get_layer("logits").units == 3
    assert type(model.get_layer("pool")).__name__ == "GlobalAveragePooling2D"  # 1x1 map at 32 px
    # Only the head trains: Dense(2048 -> 256) and Dense(256 -> 3).
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 2048 * 256 + 256 + 256 * 3 + 3

    logits = kmodel.logits_model(model)
    assert logits.input_shape == (None, SIZE, SIZE, 3) and logits.output_shape == (None, 3)
    spec = tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)
    graph = tf.function(lambda x: logits(x, training=False)).get_concrete_function(spec).graph
    types = {op.type for op in graph.get_operations()}
    assert "ReverseV2" in types and "Sub" in types  # the preprocessing is in the model
    assert types - set(op_handlers) <= NO_INPUT_DEPENDENCE, "an op Deep SHAP would pass a plain gradient"


def test_head_pools_7x7_maps_with_the_published_average_pooling():
    # A 1x1 convolution stands in for ResNet50 at 224 px: its map is 7x7 too.
    backbone = keras.Sequential([keras.Input((7, 7, 3)), keras.layers.Conv2D(8, 1)], name="resnet50")
    model = km.build_model(4, 7, load_config().keras, backbone)
    pool = model.get_layer("pool")
    assert type(pool).__name__ == "AveragePooling2D" and pool.pool_size == (7, 7)
    assert model.output_shape == (None, 4)


def test_augmentation_changes_images_in_training_only():
    augment = km.augmentation(seed=0)
    assert [type(layer).__name__ for layer in augment.layers] == [
        "RandomRotation", "RandomZoom", "RandomTranslation", "RandomShear", "RandomFlip",
    ]  # fmt: skip
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    assert np.array_equal(keras.ops.convert_to_numpy(augment(x, training=False)), x)
    assert not np.allclose(keras.ops.convert_to_numpy(augment(x, training=True)), x)


# --- backbone weights --------------------------------------------------------------------------


def test_weights_path_loads_a_local_file(resnet_arm, tmp_path):
    path = str(tmp_path / "backbone.weights.h5")
    reference = km.backbone_of(resnet_arm.model)
    reference.save_weights(path)
    arm = KerasArm.create(
        keras_cfg(seed=1, weights=path), n_classes=3, image_size=SIZE
    )  # another seed: other random weights
    assert arm.backbone_weights == arm.info()["backbone_weights"] == f"file: {path}"
    assert _same_weights(km.backbone_of(arm.model), reference)
    assert not _same_weights(arm.model, resnet_arm.model)  # the head is still the seed's own


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_backbone(str(tmp_path / "missing.h5"), SIZE)


URL_FAILURE = Exception("URL fetch failure on https://example.invalid/x.h5: None -- [Errno 111] Connection refused")


@pytest.mark.parametrize(
    ("error", "falls_back"),
    [
        (URL_FAILURE, True),  # what keras.utils.get_file raises without a network
        (ConnectionResetError("reset by peer"), True),
        (
            ValueError("Incomplete or corrupted file detected. The sha256 file hash does not match the provided value"),
            True,
        ),
        (RuntimeError("a bug, not a missing file"), False),
        (ValueError("input_shape too small"), False),
    ],
    ids=["url-fetch-failure", "os-error", "hash-mismatch", "runtime-error", "other-value-error"],
)
def test_imagenet_download_failures_fall_back_and_other_errors_propagate(monkeypatch, error, falls_back):
    # keras.applications.ResNet50 (public) stands in: it fails for ImageNet weights only.
    built = []

    def resnet50(include_top, weights, input_shape):
        built.append(weights)
        if weights == "imagenet":
            raise error
        return stand_in_backbone(input_shape[0])

    monkeypatch.setattr(keras.applications, "ResNet50", resnet50)
    if not falls_back:
        with warnings.catch_warnings():
            warnings.simplefilter("error", BackboneWeightsWarning)
            with pytest.raises(type(error), match=str(error)[:10]):
                load_backbone("imagenet", SIZE)
        assert built == ["imagenet"]
        return
    with pytest.warns(BackboneWeightsWarning) as caught:
        backbone, record = load_backbone("imagenet", SIZE)
    assert record == RANDOM_UNAVAILABLE and built == ["imagenet", None] and backbone.name == "resnet50"
    ours = [w for w in caught if issubclass(w.category, BackboneWeightsWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "\n" not in message and type(error).__name__ in message and "NOT transfer learning" in message


OFFLINE_SCRIPT = """
import json, pathlib, sys, warnings
import keras_impl
from keras_impl.weights import BackboneWeightsWarning, load_backbone

def attempt():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbone, record = load_backbone("imagenet", 32)
    ours = [str(w.message) for w in caught if issubclass(w.category, BackboneWeightsWarning)]
    print("RESULT " + json.dumps({"record": record, "name": backbone.name, "warnings": ours}), flush=True)

attempt()  # an empty cache
cached = pathlib.Path(sys.argv[1]) / "models" / sys.argv[2]
print("RESULT " + json.dumps({"cached_after_failure": cached.exists()}), flush=True)
cached.write_bytes(b"not the ImageNet weights")
attempt()  # a cached file that is not the published one
"""


@pytest.mark.slow
def test_offline_imagenet_goes_through_keras_own_cache_then_falls_back_and_says_so(tmp_path):
    """Keras's real loader runs in a fresh process whose Keras home is a temporary folder
    and whose every HTTP(S) request goes to a closed local port: Keras looks in
    ``$KERAS_HOME/models``, tries the download and fails; the arm goes on with a random
    backbone and says so in one one-line warning. A file in that cache that is not the
    published one is checked against the published hash, not trusted.

    What is *not* tested: a successful download and a cache hit. Both need the real
    ImageNet file (Keras checks it against the published hash), which a test cannot get
    without the network or without patching Keras's private download code."""
    home = tmp_path / "keras_home"
    home.mkdir()
    proxy = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update({"KERAS_HOME": str(home), "PYTHONPATH": str(REPO)})
    env.update({k: proxy for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")})
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, str(home), NOTOP],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_out, _, second_out = proc.stdout.partition('{"cached_after_failure"')
    results = [json.loads(line[len("RESULT ") :]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 3, proc.stdout[-3000:]
    empty_cache, after, stale_cache = results

    assert empty_cache["record"] == RANDOM_UNAVAILABLE and empty_cache["name"] == "resnet50"
    assert len(empty_cache["warnings"]) == 1
    message = empty_cache["warnings"][0]
    assert "\n" not in message and "URL fetch failure" in message and NOTOP in message
    assert "NOT transfer learning" in message
    assert "Downloading data from https://storage.googleapis.com/" in first_out
    assert (home / "models").is_dir() and after == {"cached_after_failure": False}  # no partial file left

    assert "hash does not match" in second_out and "re-download" in second_out
    assert stale_cache["record"] == RANDOM_UNAVAILABLE and len(stale_cache["warnings"]) == 1


# --- training ---------------------------------------------------------------------------------


def test_cached_features_train_the_same_model_as_end_to_end(keras_case, tiny_images, monkeypatch):
    cached_arm, data, cached = keras_case.arm, keras_case.data, keras_case.result
    assert cached.info["feature_cache"] == "miss" and cached.info["training_route"] == "cached features"

    e2e_arm = stand_in_arm(keras_cfg())  # the same initial weights as the shared arm's
    e2e = kt.fit(
        e2e_arm.model,
        data,
        e2e_arm.settings,
        seed=e2e_arm.cfg.seed,
        backbone_weights=e2e_arm.backbone_weights,
        use_features=False,
    )
    assert e2e.info["training_route"] == "end to end" and e2e.info["feature_cache"] == "off"

    # The two routes compute the same features in other batches; to first order each training step
    # adds the network's float32 bound (tests/tolerance.py) on the scale of what is compared.
    def bound(scale: float) -> float:
        return TRAINING_STEPS * network_atol(STAND_IN_FAN_INS, scale)

    for key in HISTORY_KEYS:
        np.testing.assert_allclose(e2e.history[key], cached.history[key], atol=bound(max(cached.history[key])))
    for a, b in zip(e2e_arm.model.trainable_weights, cached_arm.model.trainable_weights, strict=True):
        b = keras.ops.convert_to_numpy(b)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), b, atol=bound(np.abs(b).max()))
    images = np.concatenate([data.x_train, data.x_val])
    logit_scale = np.abs(keras_logits(cached_arm, images)).max()
    np.testing.assert_allclose(
        e2e_arm.predict_proba(images), cached_arm.predict_proba(images), atol=softmax_atol(bound(logit_scale))
    )

    # The same backbone weights and data a second time: features come from the cache.
    again = e2e_arm.fit(data)
    assert again.info["feature_cache"] == "hit" and again.info["training_route"] == "cached features"
    # Another split of the same images (as another seed makes) reads the same cache file,
    # and every image still gets its own features.
    fresh_train, fresh_val, _ = kt.backbone_features(
        e2e_arm.model, keras_training_data(tiny_images), e2e_arm.backbone_weights
    )
    swapped = TrainingData(
        data.x_val, data.y_val, data.x_train, data.y_train, data_key="other", cache_dir=data.cache_dir
    )
    s_train, s_val, status = kt.backbone_features(e2e_arm.model, swapped, e2e_arm.backbone_weights)
    assert status == "hit"
    atol = network_atol(BACKBONE_FAN_INS, max(np.abs(fresh_train).max(), np.abs(fresh_val).max()))
    np.testing.assert_allclose(s_train, fresh_val, atol=atol)  # the same images' features, other batches
    np.testing.assert_allclose(s_val, fresh_train, atol=atol)
    # ...but not for other pixels (one changed pixel is enough), nor without a cache folder.
    changed = keras_training_data(tiny_images, cache_dir=data.cache_dir)
    changed.x_val[0, 0, 0, 0] ^= 1
    assert kt.backbone_features(e2e_arm.model, changed, e2e_arm.backbone_weights)[2] == "miss"
    # Nor for features the other TensorFlow kernels (oneDNN or Eigen) would have computed.
    same = keras_training_data(tiny_images, cache_dir=data.cache_dir)
    assert kt.backbone_features(e2e_arm.model, same, e2e_arm.backbone_weights)[2] == "hit"
    monkeypatch.setattr(kt, "onednn_enabled", lambda: not keras_impl.onednn_enabled())
    assert kt.backbone_features(e2e_arm.model, same, e2e_arm.backbone_weights)[2] == "miss"
    uncached = keras_training_data(tiny_images)
    f_train, f_val, status = kt.backbone_features(e2e_arm.model, uncached, e2e_arm.backbone_weights)
    assert status == "off" and f_train.dtype == np.float32
    assert f_train.shape == (12, STAND_IN_WIDTH) and f_val.shape == (6, STAND_IN_WIDTH)


def test_fit_records_the_backbone_weights_and_the_models_facts(keras_case):
    arm, result = keras_case.arm, keras_case.result
    assert result.info["feature_seconds"] > 0
    assert result.info["backbone_weights"] == arm.backbone_weights == STAND_IN
    info = arm.info()
    assert info["device"] in ("cpu", "cpu (oneDNN)", "gpu") and info["n_parameters"] == arm.model.count_params()
    # keras_impl turns TensorFlow's oneDNN kernels on unless the user said otherwise (here
    # through conftest's import of keras_impl, as in the arm's worker process).
    if os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1" and info["device"] != "gpu":
        assert info["tensorflow_onednn"] is True and info["device"] == "cpu (oneDNN)"
    assert info["backbone_frozen"] and info["image_size"] == SIZE and info["n_classes"] == 3


def test_augmentation_trains_end_to_end_outside_the_saved_model(tiny_images):
    arm = stand_in_arm(keras_cfg(augment=True, epochs=1))
    result = arm.fit(keras_training_data(tiny_images))
    assert result.info["training_route"] == "end to end" and result.info["feature_cache"] == "off"
    assert all(len(v) == 1 and np.isfinite(v[0]) for v in result.history.values())
    assert "augmentation" not in [layer.name for layer in arm.model.layers]
    with pytest.raises(ValueError, match="frozen backbone"):
        kt.fit(
            arm.model, keras_training_data(tiny_images), arm.settings, seed=0, backbone_weights="x", use_features=True
        )


# --- saving ---------------------------------------------------------------------------------------


def test_a_model_is_saved_as_a_keras_file_only(keras_case, tmp_path):
    with pytest.raises(ValueError, match=".keras"):
        keras_case.arm.save(tmp_path / "model.h5")
    assert not list(tmp_path.iterdir())


# --- shap's layout and our conversion -------------------------------------------------------------


def test_layout_conversion_moves_the_class_axis():
    n, h, w, c, k = 2, 4, 5, 3, 6
    values = np.arange(n * h * w * c * k, dtype=np.float64).reshape(n, h, w, c, k)
    converted = shap_to_explanation_layout(values)
    assert converted.dtype == np.float32 and converted.flags.c_contiguous
    assert converted.shape == (n, k, h, w, c)
    assert converted[1, 4, 2, 3, 1] == values[1, 2, 3, 1, 4]
    with pytest.raises(TypeError):
        shap_to_explanation_layout([values[..., 0]] * k)  # shap < 0.45: one array per class
    with pytest.raises(ValueError):
        shap_to_explanation_layout(values[..., 0])


@pytest.mark.parametrize("method", ["deep", "gradient"])
def test_shap_returns_n_h_w_c_k_for_an_nhwc_keras_model(method):
    # K = 4 classes, C = 3 channels, H = W = 8: the class axis tells itself apart.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    rng = np.random.default_rng(0)
    x, background = rng.uniform(0, 1, (2, 8, 8, 3)).astype("float32"), rng.uniform(0, 1, (5, 8, 8, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "deep":
            values = shap.DeepExplainer(model, background).shap_values(x)
        else:
            values = shap.GradientExplainer(model, background).shap_values(x, nsamples=4, rseed=0)
    assert isinstance(values, np.ndarray)
    assert values.shape == (2, 8, 8, 3, 4)


# --- the on-disk image store ---------------------------------------------------------------------------


def test_features_and_predictions_from_the_on_disk_store_equal_those_from_arrays(keras_case, tiny_images, tmp_path):
    # The study's splits are stores read a batch at a time; arrays held whole are how it ran before.
    arm, data = keras_case.arm, keras_training_data(tiny_images)
    path = tmp_path / "images.npy"
    offset = create_store(path, len(data.x_train) + len(data.x_val), data.x_train.shape[1:])
    write_rows(path, offset, dict(enumerate(np.concatenate([data.x_train, data.x_val]))))
    store, n = ImageStore(path), len(data.x_train)
    x_train, x_val = store.subset(np.arange(n)), store.subset(np.arange(n, len(store)))
    lazy = TrainingData(x_train, data.y_train, x_val, data.y_val, data_key="tiny", cache_dir=tmp_path / "c")
    held = TrainingData(data.x_train, data.y_train, data.x_val, data.y_val, data_key="tiny", cache_dir=tmp_path / "c")
    l_train, l_val, status = kt.backbone_features(arm.model, lazy, arm.backbone_weights)
    assert status == "miss"
    h_train, h_val, status = kt.backbone_features(arm.model, held, arm.backbone_weights)
    assert status == "hit"  # the same pixels: the same digests and key
    assert np.array_equal(l_train, h_train) and np.array_equal(l_val, h_val)
    o_train, _, status = kt.backbone_features(arm.model, data, arm.backbone_weights)
    assert status == "off"
    np.testing.assert_allclose(o_train, l_train, atol=network_atol(BACKBONE_FAN_INS, np.abs(l_train).max()))
    assert np.array_equal(arm.predict_proba(x_val), arm.predict_proba(data.x_val))


def test_a_saved_model_with_code_in_it_is_refused(tmp_path):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))  # a Lambda layer holds Python code
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        KerasArm.load(tmp_path / "model.keras", load_config())
