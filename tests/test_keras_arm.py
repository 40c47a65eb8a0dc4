"""The Keras arm on tiny 32x32 images: backbone weights, training routes, save/load, SHAP.

ResNet50 is slow to build and to trace on a CPU, so one arm is trained once per module
(``shared``) and the tests that only read it reuse it. Random backbone weights
(``weights="none"``) everywhere except in the weight-loading tests.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
shap = pytest.importorskip("shap")
h5py = pytest.importorskip("h5py")

from keras.src.applications import resnet as keras_resnet  # noqa: E402
from keras.src.backend import config as keras_config  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402
from keras.src.utils import file_utils  # noqa: E402
from shap.explainers._deep.deep_tf import op_handlers  # noqa: E402

from common.arm import HISTORY_KEYS, Explanation, TrainingData, arm_class  # noqa: E402
from common.config import KerasConfig, StudyConfig  # noqa: E402
from common.errors import ConfigError  # noqa: E402
import keras_impl  # noqa: E402
from keras_impl import model as km  # noqa: E402
from keras_impl import train as kt  # noqa: E402
from keras_impl.arm import KerasArm  # noqa: E402
from keras_impl.explain import explain, shap_to_explanation_layout  # noqa: E402
from keras_impl.weights import RANDOM_UNAVAILABLE, BackboneWeightsWarning, load_backbone  # noqa: E402

pytestmark = pytest.mark.keras

SIZE = 32
NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"  # the name Keras downloads and caches
NO_INPUT_DEPENDENCE = {"Const", "NoOp", "Placeholder", "ReadVariableOp"}  # graph ops shap need not handle


def _cfg(seed: int = 0, **keras_settings) -> StudyConfig:
    settings = {"weights": "none", "epochs": 2, "batch_size": 4, **keras_settings}
    return StudyConfig(seed=seed, keras=KerasConfig(**settings))


def _data(tiny_images, cache_dir=None, data_key: str = "tiny") -> TrainingData:
    x_train, y_train = tiny_images(4, SIZE, seed=0)  # 12 images: 3 batches of 4
    x_val, y_val = tiny_images(2, SIZE, seed=1)  # 6 images
    return TrainingData(x_train, y_train, x_val, y_val, data_key=data_key, cache_dir=cache_dir)


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v)) for u, v in zip(a.weights, b.weights)
    )


def _logits(arm: KerasArm, images: np.ndarray) -> np.ndarray:
    """The arm's logits, computed eagerly (no graph to trace)."""
    return keras.ops.convert_to_numpy(km.logits_model(arm.model)(images.astype(np.float32), training=False))


@pytest.fixture(scope="module")
def _module_state():
    return {}


@pytest.fixture
def shared(tiny_images, _module_state, tmp_path_factory):
    """One arm trained on cached features (2 epochs), with its data and TrainResult; read only."""
    if "arm" not in _module_state:
        data = _data(tiny_images, cache_dir=tmp_path_factory.mktemp("cache"))
        arm = KerasArm.create(_cfg(), n_classes=3, image_size=SIZE)
        _module_state.update(arm=arm, data=data, result=arm.fit(data))
    return _module_state["arm"], _module_state["data"], _module_state["result"]


@pytest.fixture(scope="module")
def reference_backbone():
    """A seeded random no-top ResNet50: the stand-in for ImageNet weights."""
    keras.utils.set_random_seed(1234)  # not the arms' seed: its weights differ from theirs
    return keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))


@pytest.fixture(scope="module")
def weights_files(reference_backbone, tmp_path_factory):
    """The reference weights as the published legacy .h5 file (layer_names at the top, as
    Keras 2's save_weights wrote it) and as a Keras 3 .weights.h5 file."""
    folder = tmp_path_factory.mktemp("weights")
    legacy = folder / NOTOP
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference_backbone)
    keras3 = folder / "backbone.weights.h5"
    reference_backbone.save_weights(keras3)
    return {"legacy": legacy, "keras3": keras3}


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras home. Keras reads KERAS_HOME once, at import, into config._KERAS_DIR."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    return home


# --- model ---------------------------------------------------------------------------------


def test_preprocess_layer_is_resnet50_preprocess_input_and_serialisable():
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)
    layer = km.ResNet50Preprocess()
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is km.ResNet50Preprocess


@pytest.mark.slow
def test_architecture_and_every_op_is_one_shap_handles(shared):
    arm, _, _ = shared
    model = arm.model
    names = [layer.name for layer in model.layers]
    assert names == ["pixels", "preprocess", "resnet50", "pool", "flatten", "dense", "dropout", "logits", "probabilities"]
    assert not km.backbone_of(model).trainable
    assert model.get_layer("dense").units == 256 and model.get_layer("dense").activation.__name__ == "relu"
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert model.get_layer("logits").units == 3
    assert type(model.get_layer("pool")).__name__ == "GlobalAveragePooling2D"  # 1x1 map at 32 px
    # Only the head trains: Dense(2048 -> 256) and Dense(256 -> 3).
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 2048 * 256 + 256 + 256 * 3 + 3

    logits = km.logits_model(model)
    assert logits.input_shape == (None, SIZE, SIZE, 3) and logits.output_shape == (None, 3)
    spec = tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)
    graph = tf.function(lambda x: logits(x, training=False)).get_concrete_function(spec).graph
    types = {op.type for op in graph.get_operations()}
    assert "ReverseV2" in types and "Sub" in types  # the preprocessing is in the model
    assert types - set(op_handlers) <= NO_INPUT_DEPENDENCE, "an op Deep SHAP would pass a plain gradient"


def test_head_pools_7x7_maps_with_the_published_average_pooling():
    # A 1x1 convolution stands in for ResNet50 at 224 px: its map is 7x7 too.
    backbone = keras.Sequential([keras.Input((7, 7, 3)), keras.layers.Conv2D(8, 1)], name="resnet50")
    model = km.build_model(4, 7, KerasConfig(), backbone)
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


@pytest.mark.slow
def test_imagenet_weights_come_through_keras_own_download_and_cache(
    reference_backbone, weights_files, keras_home, monkeypatch
):
    # Only Keras's download step (urlretrieve inside keras.utils.get_file, which resnet.py
    # calls as file_utils.get_file) and its hash check are replaced: the download hands
    # over our file, and the check accepts it under the published hash only.
    published_hash = keras_resnet.WEIGHTS_HASHES["resnet50"][1]
    our_md5 = file_utils.hash_file(weights_files["legacy"], algorithm="md5")
    real_validate = file_utils.validate_file
    downloads = []

    def fake_urlretrieve(origin, target, reporthook=None):
        downloads.append((origin, target))
        shutil.copyfile(weights_files["legacy"], target)

    def fake_validate(fpath, file_hash, algorithm="auto", chunk_size=65535):
        return file_hash == published_hash and real_validate(fpath, our_md5, algorithm="md5")

    monkeypatch.setattr(file_utils, "urlretrieve", fake_urlretrieve)
    monkeypatch.setattr(file_utils, "validate_file", fake_validate)

    arm = KerasArm.create(_cfg(weights="imagenet"), n_classes=3, image_size=SIZE)
    assert downloads == [(keras_resnet.BASE_WEIGHTS_PATH + NOTOP, str(keras_home / "models" / NOTOP))]
    assert arm.backbone_weights == arm.info()["backbone_weights"] == "imagenet"
    assert _same_weights(km.backbone_of(arm.model), reference_backbone)

    # A second run reads Keras's cache: no download.
    backbone, record = load_backbone("imagenet", SIZE)
    assert record == "imagenet" and len(downloads) == 1
    assert _same_weights(backbone, reference_backbone)


@pytest.mark.slow
def test_weights_path_loads_a_local_file(reference_backbone, weights_files):
    path = str(weights_files["keras3"])
    arm = KerasArm.create(_cfg(weights=path), n_classes=3, image_size=SIZE)
    assert arm.backbone_weights == arm.info()["backbone_weights"] == f"file: {path}"
    assert _same_weights(km.backbone_of(arm.model), reference_backbone)


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_backbone(str(tmp_path / "missing.h5"), SIZE)


def test_without_cache_or_network_imagenet_falls_back_to_random_and_says_so(keras_home, monkeypatch):
    def offline(origin, target, reporthook=None):  # what urlretrieve raises without a network
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)  # holds on a machine with a network too
    with pytest.warns(BackboneWeightsWarning) as caught:
        arm = KerasArm.create(_cfg(weights="imagenet"), n_classes=3, image_size=SIZE)
    ours = [w for w in caught if issubclass(w.category, BackboneWeightsWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "\n" not in message and "URL fetch failure" in message and "NOT transfer learning" in message
    assert arm.backbone_weights == arm.info()["backbone_weights"] == RANDOM_UNAVAILABLE
    assert RANDOM_UNAVAILABLE == "random (ImageNet weights unavailable)"
    assert not (keras_home / "models" / NOTOP).exists()


def test_other_errors_while_loading_imagenet_are_not_swallowed(keras_home, monkeypatch):
    def broken(origin, target, reporthook=None):
        raise RuntimeError("a bug, not a missing file")

    monkeypatch.setattr(file_utils, "urlretrieve", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackboneWeightsWarning)
        with pytest.raises(RuntimeError, match="a bug"):
            load_backbone("imagenet", SIZE)


# --- training ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_cached_features_train_the_same_model_as_end_to_end(shared, tiny_images, tmp_path, monkeypatch):
    cached_arm, data, cached = shared
    assert cached.info["feature_cache"] == "miss" and cached.info["training_route"] == "cached features"

    e2e_arm = KerasArm.create(_cfg(), n_classes=3, image_size=SIZE)
    e2e = kt.fit(e2e_arm.model, data, e2e_arm.cfg, backbone_weights=e2e_arm.backbone_weights, use_features=False)
    assert e2e.info["training_route"] == "end to end" and e2e.info["feature_cache"] == "off"
    for key in HISTORY_KEYS:
        np.testing.assert_allclose(e2e.history[key], cached.history[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(e2e_arm.model.trainable_weights, cached_arm.model.trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-6)
    images = np.concatenate([data.x_train, data.x_val])
    np.testing.assert_allclose(e2e_arm.predict_proba(images), cached_arm.predict_proba(images), atol=1e-5)

    # The same backbone weights and data a second time: features come from the cache.
    again = e2e_arm.fit(data)
    assert again.info["feature_cache"] == "hit" and again.info["training_route"] == "cached features"
    # Another split of the same images (as another seed makes) reads the same cache file,
    # and every image still gets its own features.
    fresh_train, fresh_val, _ = kt.backbone_features(e2e_arm.model, _data(tiny_images), e2e_arm.backbone_weights)
    swapped = TrainingData(data.x_val, data.y_val, data.x_train, data.y_train, data_key="other", cache_dir=data.cache_dir)
    s_train, s_val, status = kt.backbone_features(e2e_arm.model, swapped, e2e_arm.backbone_weights)
    assert status == "hit"
    np.testing.assert_allclose(s_train, fresh_val, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_val, fresh_train, rtol=1e-5, atol=1e-5)
    # ...but not for other pixels (one changed pixel is enough), nor without a cache folder.
    changed = _data(tiny_images, cache_dir=data.cache_dir)
    changed.x_val[0, 0, 0, 0] ^= 1
    assert kt.backbone_features(e2e_arm.model, changed, e2e_arm.backbone_weights)[2] == "miss"
    # Nor for features the other TensorFlow kernels (oneDNN or Eigen) would have computed.
    same = _data(tiny_images, cache_dir=data.cache_dir)
    assert kt.backbone_features(e2e_arm.model, same, e2e_arm.backbone_weights)[2] == "hit"
    monkeypatch.setattr(kt, "onednn_enabled", lambda: not keras_impl.onednn_enabled())
    assert kt.backbone_features(e2e_arm.model, same, e2e_arm.backbone_weights)[2] == "miss"
    uncached = _data(tiny_images)
    f_train, f_val, status = kt.backbone_features(e2e_arm.model, uncached, e2e_arm.backbone_weights)
    assert status == "off" and f_train.shape == (12, 2048) and f_val.shape == (6, 2048) and f_train.dtype == np.float32


@pytest.mark.slow
def test_fit_history_best_epoch_and_info(shared):
    arm, _, result = shared
    assert tuple(result.history) == HISTORY_KEYS
    assert all(len(v) == 2 and all(np.isfinite(v)) for v in result.history.values())
    assert result.best_val_epoch == int(np.argmin(result.history["val_loss"])) + 1
    assert result.train_seconds > 0 and result.info["feature_seconds"] > 0
    assert result.info["backbone_weights"] == "random (none requested)"
    info = arm.info()
    assert info["device"] in ("cpu", "cpu (oneDNN)", "gpu") and info["n_parameters"] == arm.model.count_params()
    # keras_impl turns TensorFlow's oneDNN kernels on unless the user said otherwise (here
    # through conftest's import of keras_impl, as in the arm's worker process).
    if os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1" and info["device"] != "gpu":
        assert info["tensorflow_onednn"] is True and info["device"] == "cpu (oneDNN)"
    assert info["backbone_frozen"] and info["image_size"] == SIZE and info["n_classes"] == 3


@pytest.mark.slow
def test_augmentation_trains_end_to_end_outside_the_saved_model(tiny_images):
    arm = KerasArm.create(_cfg(augment=True, epochs=1), n_classes=3, image_size=SIZE)
    result = arm.fit(_data(tiny_images))
    assert result.info["training_route"] == "end to end" and result.info["feature_cache"] == "off"
    assert all(len(v) == 1 and np.isfinite(v[0]) for v in result.history.values())
    assert "augmentation" not in [layer.name for layer in arm.model.layers]
    with pytest.raises(ValueError, match="frozen backbone"):
        kt.fit(arm.model, _data(tiny_images), arm.cfg, backbone_weights="x", use_features=True)


# --- save / load / predict ----------------------------------------------------------------------


@pytest.mark.slow
def test_save_then_load_predicts_identical_probabilities(shared, tmp_path, monkeypatch):
    arm, data, _ = shared
    path = tmp_path / KerasArm.model_filename
    arm.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.info.json", "model.keras"]  # no temporary file

    def no_download(*args, **kwargs):
        raise AssertionError("loading a saved model must not fetch ImageNet weights")

    monkeypatch.setattr(file_utils, "get_file", no_download)
    loaded = KerasArm.load(path, _cfg())
    images = np.concatenate([data.x_train, data.x_val])
    before, after = arm.predict_proba(images), loaded.predict_proba(images)
    assert after.dtype == np.float32 and after.shape == (len(images), 3)
    assert np.array_equal(before, after)
    np.testing.assert_allclose(after.sum(1), 1, atol=1e-5)
    assert _same_weights(arm.model, loaded.model)
    np.testing.assert_array_equal(_logits(loaded, data.x_val), _logits(arm, data.x_val))  # the explained view
    assert loaded.info()["backbone_weights"] == arm.backbone_weights
    with pytest.raises(ValueError, match=".keras"):
        arm.save(tmp_path / "model.h5")


def test_arm_is_registered_with_its_names():
    assert arm_class("keras") is KerasArm
    assert (KerasArm.name, KerasArm.framework, KerasArm.model_filename) == ("keras_resnet50", "keras", "model.keras")


def test_predict_proba_rejects_wrong_image_shapes():
    inputs = keras.Input((SIZE, SIZE, 3))  # a small stand-in model: no ResNet50 needed here
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    arm = KerasArm(keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), _cfg(), "random (none requested)")
    images = np.zeros((2, SIZE, SIZE, 3), dtype=np.uint8)
    assert arm.predict_proba(images).shape == (2, 3) and arm.predict_proba(images[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="NHWC"):
        arm.predict_proba(images.transpose(0, 3, 1, 2))


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


# --- explanations -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deep_shap_is_additive_for_every_image_and_class(shared):
    arm, data, _ = shared
    images, background = data.x_val[:2], data.x_train[::3]  # 2 images, 4 background
    e = arm.explain(images, background, "deep", nsamples=0, seed=0)
    assert (e.method, e.output, e.nsamples, e.n_background) == ("deep", "logits", None, 4)
    assert e.attributions.shape == (2, 3, SIZE, SIZE, 3) and e.attributions.dtype == np.float32
    assert e.additivity_errors.shape == (2, 3)
    # The sums per (image, class) match that class's logit: the class axis was the last one.
    assert e.additivity_max_abs_error < 1e-4
    assert np.abs(e.outputs - e.base_values).max() > 0.1  # a non-trivial check

    np.testing.assert_allclose(e.base_values, _logits(arm, background).mean(0), atol=1e-4)
    np.testing.assert_allclose(e.outputs, _logits(arm, images), atol=1e-5)
    np.testing.assert_allclose(e.probabilities, arm.predict_proba(images), atol=1e-6)
    assert e.base_values.dtype == e.outputs.dtype == e.probabilities.dtype == np.float32

    again = arm.explain(images, background, "deep", nsamples=0, seed=0)  # the built explainer is reused
    assert len(arm._explainers) >= 1 and np.array_equal(again.attributions, e.attributions)


@pytest.mark.slow
def test_gradient_shap_shape_determinism_and_base_values(shared):
    arm, data, _ = shared
    images, background = data.x_val[:2], data.x_train[::3]
    np.random.seed(99)
    numpy_state = np.random.get_state()[1].copy()
    e = arm.explain(images, background, "gradient", nsamples=8, seed=3)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # shap's reseeding undone
    assert isinstance(e, Explanation) and (e.method, e.nsamples, e.n_background) == ("gradient", 8, 4)
    assert e.attributions.shape == (2, 3, SIZE, SIZE, 3) and e.attributions.dtype == np.float32
    assert np.isfinite(e.attributions).all() and np.abs(e.attributions).max() > 0

    again = arm.explain(images, background, "gradient", nsamples=8, seed=3)
    assert np.array_equal(e.attributions, again.attributions)
    other_seed = arm.explain(images, background, "gradient", nsamples=8, seed=4)
    assert not np.array_equal(e.attributions, other_seed.attributions)

    np.testing.assert_allclose(e.base_values, _logits(arm, background).mean(0), atol=1e-4)


@pytest.mark.slow
def test_probability_output_explains_the_softmax(shared):
    arm, data, _ = shared
    e = explain(arm.model, data.x_val[:1], data.x_train[::4], "gradient", nsamples=2, seed=0, output="probability")
    assert e.output == "probability" and e.attributions.shape == (1, 3, SIZE, SIZE, 3)
    np.testing.assert_allclose(e.outputs, e.probabilities, atol=1e-6)
    np.testing.assert_allclose(e.base_values.sum(), 1, atol=1e-5)


def test_explain_rejects_unknown_method_and_output():
    x = np.zeros((1, SIZE, SIZE, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="method"):
        explain(None, x, x, "kernel", nsamples=1, seed=0)  # checked before the model is touched
    with pytest.raises(ValueError, match="output"):
        explain(None, x, x, "deep", nsamples=1, seed=0, output="softmax")
