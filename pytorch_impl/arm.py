"""The PyTorch arm: the published CNN behind the study's NumPy interface.

uint8 NHWC images become uint8 NCHW tensors through one helper, ``images_to_tensor``,
called only at this interface (here and in ``explain``); the model casts nothing and
normalises the raw pixels itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.arm import Arm, Fitted, TrainingData
from common.config import StudyConfig
from common.explanation import ExplainerOutput
from common.io import atomic_path
from common.registry import arm_spec
from pytorch_impl.explain import captum_explain, explain, gradients
from pytorch_impl.model import CNN, as_input, build_model, flatten_width, images_to_tensor
from pytorch_impl.train import resolve_device, train

PREDICT_BATCH_SIZE = 256


def channel_statistics(images: np.ndarray, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of uint8 (N, H, W, C) images (an array or a
    store read ``chunk`` images at a time), float64.

    Exact integer sums over chunks of images, so no float copy of the whole set is made
    (a chunk's int64 copy: 38 MB for 32 images at 224 px).
    """
    n_channels = images.shape[-1]
    total, total_sq = [0] * n_channels, [0] * n_channels
    for i in range(0, len(images), chunk):
        block = images[i : i + chunk].reshape(-1, n_channels).astype(np.int64)
        for c, (s, ss) in enumerate(zip(block.sum(axis=0), (block * block).sum(axis=0), strict=True)):
            total[c] += int(s)
            total_sq[c] += int(ss)
    n = images.size // n_channels
    mean = np.array([t / n for t in total])
    var = np.array([(n * ss - t * t) / (n * n) for t, ss in zip(total, total_sq, strict=True)])  # exact numerator
    return mean, np.sqrt(var)


class PyTorchArm(Arm):
    spec = arm_spec("pytorch")
    head_prefix = "classifier."  # the dense head: Linear(., 120) -> Linear(120, 84) -> Linear(84, K)

    def __init__(self, model: CNN, cfg: StudyConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(self.settings.device)
        self.model = model.to(self.device).eval()

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def n_classes(self) -> int:
        return self.model.n_classes

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> PyTorchArm:
        return cls(build_model(n_classes, image_size), cfg)

    def _fit(self, data: TrainingData) -> Fitted:
        mean, std = channel_statistics(data.x_train)
        self.model.normalize.set_statistics(mean, std)
        # Images stay where they are (an array, or the decode cache on disk): each step
        # gathers its batch and moves it to the device; the labels go to the device once.
        y_train = torch.as_tensor(data.y_train, dtype=torch.int64, device=self.device)
        y_val = torch.as_tensor(data.y_val, dtype=torch.int64, device=self.device)
        history = train(self.model, data.x_train, y_train, data.x_val, y_val, self.settings, seed=self.cfg.seed)
        return Fitted(history)

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

    def save(self, path: str | Path) -> None:
        checkpoint = {
            "model_args": {"n_classes": self.model.n_classes, "image_size": self.model.image_size},
            # CPU tensors, so the file loads on any machine; includes normalize.mean/std.
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    @classmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> PyTorchArm:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(**checkpoint["model_args"])
        model.load_state_dict(checkpoint["state_dict"])
        return cls(model, cfg)

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

    def learned_weights(self, scope: str) -> dict[str, np.ndarray]:
        """Every ``nn.Parameter`` (conv and linear kernels and biases, batch-norm scale and
        shift), or the head's (``classifier.``); buffers (the normalisation statistics and
        batch-norm running statistics) are not learned weights."""
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

    def info(self) -> dict[str, Any]:
        return {
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            "flatten_width": flatten_width(self.model.image_size),
            "image_size": self.model.image_size,
            "n_classes": self.model.n_classes,
            "torch_version": torch.__version__,
        }

    def fallbacks(self, info: dict[str, Any]) -> list[str]:
        if self.settings.device == "cuda" and str(info.get("device", "")).startswith("cpu"):
            return ["PyTorch arm: CUDA was requested but not available; it ran on the CPU."]
        return []
