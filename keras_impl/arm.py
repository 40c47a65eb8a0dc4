"""The Keras arm behind the common interface: ResNet50 + the published head."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_impl  # (sets TensorFlow's environment before keras is imported)
from common.arm import Arm, Fitted, TrainingData
from common.config import StudyConfig
from common.explanation import ExplainerOutput
from common.io import atomic_path, read_json, write_json_atomic
from common.registry import arm_spec
from keras_impl import explain as kx
from keras_impl import model as km
from keras_impl import train as kt
from keras_impl.weights import load_backbone


class KerasArm(Arm):
    """ResNet50 (frozen, weights per the ``keras.weights`` setting) with the published head.

    The model takes raw RGB pixels (0..255, NHWC); ResNet50's ``preprocess_input`` is its
    first layer. ``predict_proba`` and ``explain`` take uint8 images.
    """

    spec = arm_spec("keras")
    head_prefix = ("dense/", "logits/")  # the dense head's variables: Dense(256) -> Dense(K) logits

    def __init__(self, model: keras.Model, cfg: StudyConfig, backbone_weights: str):
        self.model = model  # pixels (B, S, S, 3) float32 -> probabilities (B, K)
        self.cfg = cfg
        self.backbone_weights = backbone_weights
        self._explainers: dict[tuple, kx.BuiltExplainer] = {}
        # x -> (logits, probabilities), traced once and read by the explainers too; it reads the current weights
        self._outputs = km.outputs_predictor(model)

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> KerasArm:
        """A new arm; the head's initial weights and Dropout seed follow ``cfg.seed``.

        Raises:
            ConfigError: the ``keras.weights`` setting names a file that does not exist.
        """
        settings = cfg.arm(cls.spec.key)
        backbone, backbone_weights = load_backbone(settings.weights, image_size)
        return cls(km.build_model(n_classes, image_size, settings, backbone), cfg, backbone_weights)

    def _fit(self, data: TrainingData) -> Fitted:
        self._explainers.clear()  # Deep SHAP's expected_value belongs to the old weights
        return kt.fit(self.model, data, self.settings, seed=self.cfg.seed, backbone_weights=self.backbone_weights)

    def _predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._forward(images, output="probability")

    def save(self, path: str | Path) -> None:
        """Write the full model as ``.keras`` (weights included) and ``<stem>.info.json``
        beside it, holding which backbone weights it started from."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"Keras models are saved as .keras files, got {path.name}")
        with atomic_path(path) as tmp:
            self.model.save(tmp)
        write_json_atomic(_info_path(path), {"backbone_weights": self.backbone_weights})

    @classmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> KerasArm:
        """Load a model written by :meth:`save` (safe mode; needs no download)."""
        path = Path(path)
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        info = _info_path(path)
        backbone_weights = read_json(info)["backbone_weights"] if info.is_file() else "unknown (not recorded)"
        return cls(model, cfg, backbone_weights)

    def _explain(
        self,
        images: np.ndarray,
        background: np.ndarray,
        method: str,
        *,
        nsamples: int,
        seeds: np.ndarray,
        output: str,
        classes: np.ndarray | None,
    ) -> ExplainerOutput:
        """Deep or Gradient SHAP for every class (or the given ones). Explainers are cached
        per method, output, background and class selection, because TensorFlow builds their
        graphs on first use (a framework reason: the PyTorch arm has nothing to cache)."""
        one_class = classes is not None
        key = (
            method,
            output,
            one_class,
            self.explain_batch_size,
            hashlib.sha256(np.ascontiguousarray(background).tobytes()).hexdigest(),
        )
        explainer = self._explainers.get(key)
        if explainer is None:
            explainer = kx.make_explainer(
                self.model,
                background,
                method,
                output=output,
                batch_size=self.explain_batch_size,
                one_class=one_class,
                predict_outputs=self._outputs,
            )
            self._explainers[key] = explainer
        return kx.explain(
            self.model,
            images,
            background,
            method,
            nsamples=nsamples,
            seeds=seeds,
            output=output,
            batch_size=self.explain_batch_size,
            explainer=explainer,
            classes=classes,
        )

    def _gradients(self, images: np.ndarray, classes: np.ndarray, *, output: str) -> tuple[np.ndarray, np.ndarray]:
        # traced once per output and reused, as the explainers are (a framework reason)
        key = ("gradients", output)
        if key not in self._explainers:
            self._explainers[key] = kx.gradient_function(self.model, output)
        return kx.gradients(self.model, images, classes, output=output, function=self._explainers[key])

    def _forward(self, images: np.ndarray, *, output: str) -> np.ndarray:
        bs = self.settings.batch_size
        batches = [self._outputs(images[i : i + bs].astype(np.float32)) for i in range(0, len(images), bs)]
        pick = 1 if output == "probability" else 0  # (logits, probabilities)
        return np.concatenate([batch[pick] for batch in batches])

    def learned_weights(self, scope: str) -> dict[str, np.ndarray]:
        """Every variable but batch-norm moving statistics (kernels, biases, batch-norm scale
        and shift; frozen backbone included), or the head's (layers ``dense`` and ``logits``),
        by variable path."""
        return {
            v.path: np.asarray(v.numpy()).copy()
            for v in self.model.weights
            if not v.path.endswith(("moving_mean", "moving_variance"))
            and (scope == "all" or v.path.startswith(self.head_prefix))
        }

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for variable in self.model.weights:
            if variable.path in weights:
                variable.assign(weights[variable.path])

    def info(self) -> dict[str, Any]:
        trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        gpus = tf.config.list_physical_devices("GPU")
        onednn = keras_impl.onednn_enabled()
        return {
            "backbone_weights": self.backbone_weights,
            "backbone_frozen": not km.backbone_of(self.model).trainable,
            "n_parameters": int(self.model.count_params()),
            "n_trainable_parameters": trainable,
            "image_size": self.image_size,
            "n_classes": self.n_classes,
            "device": "gpu" if gpus else ("cpu (oneDNN)" if onednn else "cpu"),
            "tensorflow_onednn": onednn,
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        }

    def fallbacks(self, info: dict[str, Any]) -> list[str]:
        weights = str(info.get("backbone_weights", "unknown"))
        if weights.startswith("random"):
            return [
                f"{self.spec.title} backbone weights: {weights} — this run is not transfer learning, so its "
                "accuracy says nothing about the published ImageNet result."
            ]
        return []


def _info_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".info.json")
