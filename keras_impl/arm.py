"""What both Keras arms share behind the study's NumPy interface: prediction, the explainers
(built once per method, output, background and class selection, and reused), gradients, the
learned weights and the ``.keras`` file.

The models take raw RGB pixels (0..255, NHWC) and preprocess them in their first layer; the arms:
``resnet50_arm.py`` (ResNet50, the published Keras arm) and ``cnn_arm.py`` (the published CNN).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

import keras_impl  # (sets TensorFlow's environment before keras is imported)
from common.arm import Arm
from common.config import StudyConfig
from common.explanation import ExplainerOutput
from common.io import atomic_path
from keras_impl import explain as kx
from keras_impl import model as km


class KerasModelArm(Arm):
    """A Keras probability model (raw pixels in; a ``"logits"`` layer before its softmax) behind
    the arm interface. Subclasses build and train their model and say which variables form the
    head (:attr:`head_prefix`) and which are fixed statistics, not learned (:attr:`fixed_suffixes`)."""

    head_prefix: ClassVar[tuple[str, ...]]  # the head's variables: their paths start with one of these
    fixed_suffixes: ClassVar[tuple[str, ...]] = ("moving_mean", "moving_variance")  # not learned weights

    def __init__(self, model: keras.Model, cfg: StudyConfig):
        self.model = model  # pixels (B, S, S, 3) float32 -> probabilities (B, K)
        self.cfg = cfg
        self._explainers: dict[tuple, Any] = {}
        # x -> (logits, probabilities), traced once and read by the explainers too; it reads the current weights
        self._outputs = km.outputs_predictor(model)

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.model.output_shape[-1])

    def _predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._forward(images, output="probability")

    def _forward(self, images: np.ndarray, *, output: str) -> np.ndarray:
        bs = self.settings.batch_size
        batches = [self._outputs(images[i : i + bs].astype(np.float32)) for i in range(0, len(images), bs)]
        pick = 1 if output == "probability" else 0  # (logits, probabilities)
        return np.concatenate([batch[pick] for batch in batches])

    # ------------------------------------------------------------------ saving

    def save(self, path: str | Path) -> None:
        """Write the full model as ``.keras`` (weights included)."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"Keras models are saved as .keras files, got {path.name}")
        with atomic_path(path) as tmp:
            self.model.save(tmp)

    @staticmethod
    def load_model(path: str | Path) -> keras.Model:
        """A model written by :meth:`save` (safe mode: no code in the file is run; needs no download)."""
        return keras.saving.load_model(Path(path), compile=False, safe_mode=True)

    @classmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> KerasModelArm:
        return cls(cls.load_model(path), cfg)

    # ------------------------------------------------------------------ explaining

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
        graphs on first use (a framework reason: the PyTorch arms have nothing to cache)."""
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

    # ------------------------------------------------------------------ weights and facts

    def learned_weights(self, scope: str) -> dict[str, np.ndarray]:
        """Every variable but fixed statistics (kernels, biases, batch-norm scale and shift; a
        frozen backbone's too), or the head's, by variable path."""
        return {
            v.path: np.asarray(v.numpy()).copy()
            for v in self.model.weights
            if not v.path.endswith(self.fixed_suffixes) and (scope == "all" or v.path.startswith(self.head_prefix))
        }

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for variable in self.model.weights:
            if variable.path in weights:
                variable.assign(weights[variable.path])

    def model_facts(self) -> dict[str, Any]:
        """Facts about this architecture worth recording (listed first in :meth:`info`)."""
        return {}

    def info(self) -> dict[str, Any]:
        trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        gpus = tf.config.list_physical_devices("GPU")
        onednn = keras_impl.onednn_enabled()
        return {
            **self.model_facts(),
            "n_parameters": int(self.model.count_params()),
            "n_trainable_parameters": trainable,
            "image_size": self.image_size,
            "n_classes": self.n_classes,
            "device": "gpu" if gpus else ("cpu (oneDNN)" if onednn else "cpu"),
            "tensorflow_onednn": onednn,
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        }
