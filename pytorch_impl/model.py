"""What every PyTorch model of the study shares: uint8 NHWC images as NCHW tensors, raw pixels
as the model's input, and a probability head.

Both networks (the published CNN, ``cnn.py``, and ResNet50 laid out as Keras's, ``resnet50.py``)
take raw pixels and carry their own preprocessing as their first layer; they output logits, and
probabilities are a softmax module after them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_CHANNELS = 3  # RGB


def with_probability_head(model: nn.Module) -> nn.Sequential:
    """``model`` followed by an ``nn.Softmax`` module, for explaining probabilities."""
    return nn.Sequential(model, nn.Softmax(dim=1))


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) images → uint8 (N, C, H, W) tensor on ``device`` (pixels unchanged).

    The tensor is channels-last in memory (a view of the NHWC array on the CPU, no copy),
    the layout the models' weights use. Kept uint8 (a quarter of float32's memory); cast
    batches with ``.float()`` to get the model's raw-pixel input in [0, 255].

    Raises:
        ValueError: if ``images`` is not a uint8 (N, H, W, 3) array.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != N_CHANNELS:
        raise ValueError(f"expected uint8 (N, H, W, {N_CHANNELS}) images, got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device)


def as_input(batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A uint8 NCHW batch from :func:`images_to_tensor` as the model's input: raw pixel
    values as ``dtype``, channels-last like the weights (indexing may lose that layout)."""
    return batch.to(dtype).contiguous(memory_format=torch.channels_last)
