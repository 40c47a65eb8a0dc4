"""What both PyTorch arms share behind the study's NumPy interface: the device, prediction, the
explainers, gradients, Captum's cross-check, the learned weights and the checkpoint.

uint8 NHWC images become uint8 NCHW tensors through one helper, ``images_to_tensor``, called
only at this interface (here and in ``explain``); the models cast nothing and preprocess the raw
pixels themselves. The arms: ``cnn_arm.py`` (the published CNN) and ``resnet50_arm.py`` (ResNet50
laid out as Keras's, with the Keras arm's backbone weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from common.arm import Arm
from common.config import StudyConfig
from common.explanation import ExplainerOutput
from common.io import atomic_path
from pytorch_impl.explain import captum_explain, explain, gradients
from pytorch_impl.model import as_input, images_to_tensor
from pytorch_impl.train import resolve_device

PREDICT_BATCH_SIZE = 256


class TorchArm(Arm):
    """A PyTorch model (raw pixels NCHW in, logits out; ``n_classes`` and ``image_size``
    attributes) behind the arm interface. Subclasses build and train their model and say which
    parameters form the head (:attr:`head_prefix`)."""

    head_prefix: ClassVar[str]  # the parameters of the dense head: their names start with it

    def __init__(self, model: nn.Module, cfg: StudyConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(self.settings.device)
        self.model = model.to(self.device).eval()

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def n_classes(self) -> int:
        return self.model.n_classes

    def _predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._forward(images, output="probability")

    @torch.no_grad()
    def _forward(self, images: np.ndarray, *, output: str) -> np.ndarray:
        self.model.eval()
        logits = [
            self.model(as_input(images_to_tensor(images[i : i + PREDICT_BATCH_SIZE], self.device)))
            for i in range(0, len(images), PREDICT_BATCH_SIZE)
        ]
        return torch.cat([torch.softmax(z, dim=1) if output == "probability" else z for z in logits]).cpu().numpy()

    # ------------------------------------------------------------------ saving

    def model_args(self) -> dict[str, Any]:
        """The arguments that rebuild the model's architecture (``build`` takes them)."""
        return {"n_classes": self.model.n_classes, "image_size": self.model.image_size}

    def checkpoint(self) -> dict[str, Any]:
        """What :meth:`save` writes: the model's arguments and its state dict (CPU tensors, so the
        file loads on any machine), and what :meth:`from_checkpoint` needs besides."""
        return {
            "model_args": self.model_args(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.checkpoint(), tmp)

    @classmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> TorchArm:
        """Load a checkpoint written by :meth:`save` (weights only: no code is run)."""
        return cls.from_checkpoint(torch.load(path, map_location="cpu", weights_only=True), cfg)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], cfg: StudyConfig) -> TorchArm:
        model = cls.build(**checkpoint["model_args"])
        model.load_state_dict(checkpoint["state_dict"])
        return cls(model, cfg)

    @staticmethod
    def build(**model_args: Any) -> nn.Module:
        """The untrained model of the given arguments (:meth:`model_args`)."""
        raise NotImplementedError

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
        # Runs on the arm's device, Deep SHAP in float32 (its measured additivity error is in the report).
        return explain(
            self.model,
            images,
            background,
            method,
            nsamples=nsamples,
            seeds=seeds,
            output=output,
            batch_size=self.explain_batch_size,
            classes=classes,
        )

    def _gradients(self, images: np.ndarray, classes: np.ndarray, *, output: str) -> tuple[np.ndarray, np.ndarray]:
        return gradients(self.model, images, classes, output=output)

    def _explain_independently(
        self, images: np.ndarray, background: np.ndarray, method: str, *, nsamples: int, seed: int, classes: np.ndarray
    ) -> ExplainerOutput | None:
        return captum_explain(self.model, images, background, method, nsamples=nsamples, seed=seed, classes=classes)

    # ------------------------------------------------------------------ weights and facts

    def learned_weights(self, scope: str) -> dict[str, np.ndarray]:
        """Every ``nn.Parameter`` (conv and linear kernels and biases, batch-norm scale and
        shift; a frozen backbone's too), or the head's (:attr:`head_prefix`); buffers (the
        preprocessing's constants and batch-norm running statistics) are not learned weights."""
        return {
            name: p.detach().cpu().numpy().copy()
            for name, p in self.model.named_parameters()
            if scope == "all" or name.startswith(self.head_prefix)
        }

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(torch.as_tensor(value))

    def model_facts(self) -> dict[str, Any]:
        """Facts about this architecture worth recording (listed after the device in :meth:`info`)."""
        return {}

    def info(self) -> dict[str, Any]:
        return {
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            **self.model_facts(),
            "image_size": self.model.image_size,
            "n_classes": self.model.n_classes,
            "torch_version": torch.__version__,
        }

    def fallbacks(self, info: dict[str, Any]) -> list[str]:
        if self.settings.device == "cuda" and str(info.get("device", "")).startswith("cpu"):
            return [f"{self.spec.title}: CUDA was requested but not available; it ran on the CPU."]
        return []
