"""The PyTorch ResNet50 arm: the Keras arm's model in PyTorch.

ResNet50 laid out as Keras's (``resnet50.py``) holding the Keras arm's backbone weights, converted
(``weights.py``: ImageNet's when Keras can have them, else the Keras arm's own random backbone,
said so as the Keras arm says it), frozen, with ResNet50's preprocessing as its first layer and the
published head trained with Adam as the Keras arm trains it: on the backbone's pooled features,
computed once per training run. PyTorch's own defaults otherwise (the head's initialisation,
Adam's epsilon, the loss on logits): ``common.registry.FRAMEWORK_DEFAULTS`` lists them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from common.arm import Fitted, TrainingData
from common.config import StudyConfig
from common.registry import arm_spec
from pytorch_impl.arm import TorchArm
from pytorch_impl.model import as_input, images_to_tensor
from pytorch_impl.resnet50 import ResNet50Classifier, build_model
from pytorch_impl.train import train_head
from pytorch_impl.weights import cache_dir, converted_backbone, load_backbone_state

FEATURE_BATCH_SIZE = 32  # images per forward pass of the frozen backbone


@torch.no_grad()
def backbone_features(model: ResNet50Classifier, images: np.ndarray, device: torch.device) -> np.ndarray:
    """The pooled backbone features, float32 (N, F), of uint8 NHWC ``images`` (an array or a store,
    read a batch at a time), in eval mode."""
    model.eval()
    out = [
        model.features(as_input(images_to_tensor(images[i : i + FEATURE_BATCH_SIZE], device))).flatten(1).cpu()
        for i in range(0, len(images), FEATURE_BATCH_SIZE)
    ]
    return torch.cat(out).numpy()


class PyTorchResNet50Arm(TorchArm):
    """ResNet50 (Keras's layout and backbone weights, frozen) with the published head, in PyTorch."""

    spec = arm_spec("pytorch_resnet50")
    head_prefix = "head."  # the dense head: Linear(2048 -> 256) -> Linear(256 -> K)

    def __init__(
        self, model: ResNet50Classifier, cfg: StudyConfig, backbone_weights: str, backbone_digest: str | None
    ) -> None:
        super().__init__(model, cfg)
        self.backbone_weights = backbone_weights  # keras_impl.weights' record of the Keras weights
        self.backbone_digest = backbone_digest  # keras_impl.weights.weights_digest of them (None: not Keras's)
        self.backbone_cache: str | None = None  # the conversion cache: "hit" or "miss" when create converted

    build = staticmethod(build_model)

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> PyTorchResNet50Arm:
        """A new arm holding the Keras arm's backbone (setting ``keras.weights``, seed ``cfg.seed``);
        the head's initial weights are PyTorch's, drawn after ``cfg.seed``.

        Raises:
            ConfigError: ``keras.weights`` names a file that does not exist.
        """
        settings = cfg.arm(cls.spec.key)
        converted = converted_backbone(cfg.arm(settings.backbone_arm).weights, image_size, cfg.seed, cache_dir(cfg))
        model = build_model(n_classes, image_size, settings.dense_units, settings.dropout)
        load_backbone_state(model, converted.state)
        arm = cls(model, cfg, converted.record, converted.digest)
        arm.backbone_cache = converted.cache
        return arm

    def _fit(self, data: TrainingData) -> Fitted:
        start = time.perf_counter()
        f_train, f_val = (backbone_features(self.model, x, self.device) for x in (data.x_train, data.x_val))
        feature_seconds = time.perf_counter() - start
        y_train, y_val = (torch.as_tensor(y, dtype=torch.int64, device=self.device) for y in (data.y_train, data.y_val))
        s = self.settings
        history = train_head(
            self.model.head, f_train, y_train, f_val, y_val, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
            seed=self.cfg.seed,
        )  # fmt: skip
        self.model.eval()
        info = {"feature_seconds": feature_seconds, "training_route": "backbone features, computed once"}
        if self.backbone_cache is not None:
            info["backbone_cache"] = self.backbone_cache  # the converted Keras weights: read ("hit") or converted
        return Fitted(history, info)

    def model_args(self) -> dict[str, Any]:
        return dict(self.model.args)

    def checkpoint(self) -> dict[str, Any]:
        """The model, and which backbone weights it started from (written into the same file)."""
        backbone = {"weights": self.backbone_weights, "digest": self.backbone_digest or ""}
        return {**super().checkpoint(), "backbone": backbone}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], cfg: StudyConfig) -> PyTorchResNet50Arm:
        model = cls.build(**checkpoint["model_args"])
        model.load_state_dict(checkpoint["state_dict"])
        backbone = checkpoint["backbone"]
        return cls(model, cfg, backbone["weights"], backbone["digest"] or None)

    def model_facts(self) -> dict[str, Any]:
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {
            "backbone_weights": self.backbone_weights,
            "backbone_digest": self.backbone_digest,
            "backbone_frozen": trainable == sum(p.numel() for p in self.model.head.parameters()),
            "n_trainable_parameters": trainable,
        }

    def fallbacks(self, info: dict[str, Any]) -> list[str]:
        found = super().fallbacks(info)
        weights = str(info.get("backbone_weights", "unknown"))
        if weights.startswith("random"):
            found.append(
                f"{self.spec.title} backbone weights: the Keras arm's, {weights} — this run is not transfer "
                "learning, so its accuracy says nothing about the published ImageNet result."
            )
        return found
