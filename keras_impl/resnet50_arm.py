"""The Keras ResNet50 arm behind the common interface: ResNet50 + the published head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from common.arm import Fitted, TrainingData
from common.config import StudyConfig
from common.io import read_json, write_json_atomic
from common.registry import arm_spec
from keras_impl import resnet50 as kr
from keras_impl import transfer
from keras_impl.arm import KerasModelArm
from keras_impl.weights import load_backbone


class KerasArm(KerasModelArm):
    """ResNet50 (frozen, weights per the ``keras.weights`` setting) with the published head.

    The model takes raw RGB pixels (0..255, NHWC); ResNet50's ``preprocess_input`` is its
    first layer. ``predict_proba`` and ``explain`` take uint8 images.
    """

    spec = arm_spec("keras")
    head_prefix = ("dense/", "logits/")  # the dense head's variables: Dense(256) -> Dense(K) logits

    def __init__(self, model: keras.Model, cfg: StudyConfig, backbone_weights: str):
        super().__init__(model, cfg)
        self.backbone_weights = backbone_weights

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> KerasArm:
        """A new arm; the head's initial weights and Dropout seed follow ``cfg.seed``.

        Raises:
            ConfigError: the ``keras.weights`` setting names a file that does not exist.
        """
        settings = cfg.arm(cls.spec.key)
        backbone, backbone_weights = load_backbone(settings.weights, image_size)
        return cls(kr.build_model(n_classes, image_size, settings, backbone), cfg, backbone_weights)

    def _fit(self, data: TrainingData) -> Fitted:
        self._explainers.clear()  # Deep SHAP's expected_value belongs to the old weights
        return transfer.fit(self.model, data, self.settings, seed=self.cfg.seed, backbone_weights=self.backbone_weights)

    def save(self, path: str | Path) -> None:
        """Write the full model as ``.keras`` (weights included) and ``<stem>.info.json``
        beside it, holding which backbone weights it started from."""
        super().save(path)
        write_json_atomic(_info_path(Path(path)), {"backbone_weights": self.backbone_weights})

    @classmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> KerasArm:
        """Load a model written by :meth:`save` (safe mode; needs no download)."""
        info = _info_path(Path(path))
        backbone_weights = read_json(info)["backbone_weights"] if info.is_file() else "unknown (not recorded)"
        return cls(cls.load_model(path), cfg, backbone_weights)

    def model_facts(self) -> dict[str, Any]:
        return {
            "backbone_weights": self.backbone_weights,
            "backbone_frozen": not kr.backbone_of(self.model).trainable,
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
