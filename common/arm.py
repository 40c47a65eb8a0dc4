"""The one small interface both arms implement, NumPy in and out.

Images cross this boundary as uint8 ``(N, H, W, C)`` arrays (NHWC, RGB, raw 0..255
pixels), labels as int64 ``(N,)``, class scores as float ``(N, K)`` and attributions as
float32 ``(N, K, H, W, C)``. Layout conversions (NCHW in PyTorch) and preprocessing
(normalisation in the CNN, ResNet50's ``preprocess_input`` in Keras) live inside the
arms, so the runner treats both arms alike and their maps can be laid side by side.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.config import StudyConfig

HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class TrainingData:
    """What an arm trains on: the shared split's arrays and the key of their pixels."""

    x_train: np.ndarray  # uint8 (N, H, W, C)
    y_train: np.ndarray  # int64 (N,)
    x_val: np.ndarray  # uint8 (M, H, W, C)
    y_val: np.ndarray  # int64 (M,)
    data_key: str  # content key of the decoded pixels (for caches derived from them)
    cache_dir: Path | None = None  # where an arm may cache derived data (Keras features)


@dataclass
class TrainResult:
    """Per-epoch history (same keys in both arms) and what the run should record."""

    history: dict[str, list[float]]  # HISTORY_KEYS -> one value per epoch
    best_val_epoch: int  # 1-based epoch with the lowest validation loss (the final model is kept)
    train_seconds: float  # wall time of the whole fit, feature extraction included
    info: dict[str, Any] = field(default_factory=dict)  # e.g. device, backbone_weights, feature_seconds


@dataclass
class Explanation:
    """One explainer's result for one arm, in the framework-neutral pixel layout."""

    method: str  # "deep" or "gradient"
    output: str  # explained quantity: "logits" or "probability"
    attributions: np.ndarray  # float32 (N, K, H, W, C): per image, class, pixel and channel
    base_values: np.ndarray  # float32 (K,): E[f(background)] of the explained quantity
    outputs: np.ndarray  # float32 (N, K): f(x) of the explained quantity
    probabilities: np.ndarray  # float32 (N, K): the model's class probabilities
    seconds: float  # wall time of the explainer (set-up included)
    n_background: int
    nsamples: int | None = None  # Gradient SHAP samples per image; None for Deep SHAP

    @property
    def additivity_errors(self) -> np.ndarray:
        """|sum(attributions) - (f(x) - E[f(background)])| per image and class, (N, K)."""
        total = self.attributions.reshape(*self.attributions.shape[:2], -1).astype(np.float64).sum(-1)
        return np.abs(total - (self.outputs.astype(np.float64) - self.base_values.astype(np.float64)[None, :]))

    @property
    def additivity_max_abs_error(self) -> float:
        return float(self.additivity_errors.max())

    def save(self, path: str | Path) -> None:
        from common.io import write_npz_atomic

        write_npz_atomic(
            path,
            method=np.array(self.method),
            output=np.array(self.output),
            attributions=self.attributions,
            base_values=self.base_values,
            outputs=self.outputs,
            probabilities=self.probabilities,
            seconds=np.array(self.seconds),
            n_background=np.array(self.n_background),
            nsamples=np.array(-1 if self.nsamples is None else self.nsamples),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Explanation":
        with np.load(path) as z:
            nsamples = int(z["nsamples"])
            return cls(
                method=str(z["method"]),
                output=str(z["output"]),
                attributions=z["attributions"],
                base_values=z["base_values"],
                outputs=z["outputs"],
                probabilities=z["probabilities"],
                seconds=float(z["seconds"]),
                n_background=int(z["n_background"]),
                nsamples=None if nsamples < 0 else nsamples,
            )


class Arm(abc.ABC):
    """A trainable, explainable image classifier of one framework.

    Life cycle: ``create(cfg, n_classes, image_size)`` → ``fit(data)`` → ``save(path)``;
    later ``load(path, cfg)`` → ``predict_proba`` / ``explain``.
    """

    name: ClassVar[str]  # key in metrics.json: "pytorch_cnn" or "keras_resnet50"
    framework: ClassVar[str]  # "pytorch" or "keras"
    model_filename: ClassVar[str]  # file name of the saved model, e.g. "model.pt"
    explain_batch_size: ClassVar[int] = 50  # Gradient SHAP samples per forward/backward pass (shap's default)

    @classmethod
    @abc.abstractmethod
    def create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> "Arm":
        """A new, untrained arm."""

    @abc.abstractmethod
    def fit(self, data: TrainingData) -> TrainResult:
        """Train on ``data.x_train``/``y_train``, validating on ``x_val``/``y_val`` each epoch."""

    @abc.abstractmethod
    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (N, K), for uint8 (N, H, W, C) images."""

    @abc.abstractmethod
    def save(self, path: str | Path) -> None:
        """Save the full pixel-input model to ``path`` (written atomically)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> "Arm":
        """Load a model written by :meth:`save`; it predicts exactly what the saved one did."""

    @abc.abstractmethod
    def explain(
        self, images: np.ndarray, background: np.ndarray, method: str, *, nsamples: int, seed: int, output: str = "logits"
    ) -> Explanation:
        """Explain every class for uint8 ``images`` against uint8 ``background`` with
        ``method`` "deep" (shap.DeepExplainer) or "gradient" (shap.GradientExplainer)."""

    def info(self) -> dict[str, Any]:
        """Facts about this model worth recording (parameters, weights used, device)."""
        return {}


ARM_CLASSES = {
    "pytorch": ("pytorch_impl.arm", "PyTorchArm"),
    "keras": ("keras_impl.arm", "KerasArm"),
}


def arm_class(framework: str) -> type[Arm]:
    """Import an arm lazily, so a process imports only its own framework."""
    module, name = ARM_CLASSES[framework]
    return getattr(importlib.import_module(module), name)
