"""The published PyTorch CNN, taking raw pixels and normalising them as its first layer.

Every nonlinearity is its own ``nn.Module`` leaf, none is in-place and no module is used
twice: shap's DeepExplainer rescales only module-level nonlinearities it finds through
hooks, so a functional ``F.relu`` or a shared ``nn.ReLU`` would silently break Deep SHAP.
The network outputs logits; probabilities are a softmax applied outside it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pytorch_impl.model import N_CHANNELS


def flatten_width(image_size: int) -> int:
    """Width of the flattened features for square ``image_size`` inputs (46,656 at 224).

    Raises:
        ValueError: if the image is too small to leave one feature pixel.
    """
    side = (image_size - 4) // 2  # Conv2d(3, 6, 5) then MaxPool2d(2)
    side = (side - 2) // 2  # Conv2d(6, 16, 3) then MaxPool2d(2)
    if side < 1:
        raise ValueError(f"image_size {image_size} is too small for the CNN (at least 12 pixels)")
    return 16 * side * side


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on raw pixels; the statistics are buffers, so they
    are saved in the state dict. Affine, so Deep SHAP's plain gradient through it is exact."""

    def __init__(self, n_channels: int = N_CHANNELS) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_channels))
        self.register_buffer("std", torch.ones(n_channels))

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store per-channel statistics (float32); std values of 0 are replaced by 1."""
        std = np.where(np.asarray(std) > 0, std, 1.0)
        self.mean.copy_(torch.as_tensor(np.asarray(mean), dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


class CNN(nn.Module):
    """Conv(3→6, 5) → MaxPool(2) → BN → ReLU → Conv(6→16, 3) → MaxPool(2) → BN → ReLU
    → Linear(·, 120) → ReLU → Linear(120, 84) → ReLU → Linear(84, n_classes)."""

    def __init__(self, n_classes: int, image_size: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.image_size = image_size
        self.normalize = Normalize()
        # Sequential containers (not the top module) hold the leaves: shap's DeepExplainer
        # recurses only into containers when it cleans up its hooks' attributes.
        self.features = nn.Sequential(
            nn.Conv2d(N_CHANNELS, 6, 5),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 16, 3),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flatten_width(image_size), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) for raw pixels x, float (B, 3, H, W) in [0, 255]."""
        return self.classifier(self.features(self.normalize(x)))


def build_model(n_classes: int, image_size: int) -> CNN:
    """The published CNN for ``n_classes`` and square ``image_size`` RGB images.

    Its normalisation starts as the identity (mean 0, std 1); set it from the training
    split with ``model.normalize.set_statistics``. Weights are in channels-last memory
    (``torch.channels_last``), as the images are: a training step is faster on a CPU
    (measured figures: benchmarks/BENCHMARKS.md, ``python -m benchmarks.cnn_step_bench``);
    the results are the same up to float rounding.
    """
    return CNN(n_classes, image_size).to(memory_format=torch.channels_last)
