"""The published training loop: cross-entropy, SGD with momentum and weight decay."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.arm import HISTORY_KEYS
from common.data.imagestore import ImageStore
from pytorch_impl.config import PyTorchConfig
from pytorch_impl.model import as_input, images_to_tensor

Images = np.ndarray | ImageStore  # uint8 (N, H, W, C): an array, or the decode cache read a batch at a time


def resolve_device(name: str) -> torch.device:
    """``"auto"`` or ``"cuda"``: CUDA when available; CPU otherwise (and for ``"cpu"``)."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        warnings.warn("pytorch.device is 'cuda' but CUDA is not available: using the CPU", stacklevel=2)
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, x: Images, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode on uint8 NHWC ``x`` (read a batch at a time)."""
    model.eval()
    device = y.device
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = as_input(images_to_tensor(x[start : start + batch_size], device))  # (B, C, H, W)
        yb = y[start : start + batch_size]
        logits = model(xb)
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Images,
    y: torch.Tensor,
    cfg: PyTorchConfig,
    generator: torch.Generator,
    desc: str = "",
) -> tuple[float, float]:
    """One shuffled pass over uint8 NHWC ``x`` (each step gathers its batch); returns the
    running mean loss and accuracy."""
    model.train()
    device = y.device
    loss_fn = nn.CrossEntropyLoss()
    # The order (and flips) come from a CPU generator, so they do not depend on the device.
    order = torch.randperm(len(x), generator=generator)
    loss_sum, correct = 0.0, 0
    for start in tqdm(range(0, len(x), cfg.batch_size), desc=desc, leave=False, disable=None):
        idx = order[start : start + cfg.batch_size]
        xb = as_input(images_to_tensor(x[idx.numpy()], device))  # (B, C, H, W) raw pixels in [0, 255]
        yb = y[idx.to(device)]
        if cfg.hflip:
            flip = (torch.rand(len(idx), generator=generator) < 0.5).to(device)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        optimizer.zero_grad()
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


def train(
    model: nn.Module,
    x_train: Images,
    y_train: torch.Tensor,
    x_val: Images,
    y_val: torch.Tensor,
    cfg: PyTorchConfig,
    *,
    seed: int,
) -> dict[str, list[float]]:
    """Train ``model`` in place for ``cfg.epochs`` epochs, validating after each; the final
    model is kept.

    Args:
        model: the CNN, already on the device of the labels.
        x_train, x_val: uint8 (N, H, W, C) images, arrays or stores; each step gathers
            its batch and moves it to the labels' device.
        y_train, y_val: int64 (N,) labels on the model's device.
        cfg: optimiser and loop settings.
        seed: seeds torch and the shuffling generator.

    Returns:
        The history: each of ``HISTORY_KEYS`` → one value per epoch. The training values
        are running means over the epoch (train mode), the validation ones in eval mode.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    for epoch in range(1, cfg.epochs + 1):
        train_loss, train_acc = train_one_epoch(
            model, optimizer, x_train, y_train, cfg, generator, desc=f"epoch {epoch}/{cfg.epochs}"
        )
        val_loss, val_acc = evaluate(model, x_val, y_val, cfg.batch_size)
        for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, val_loss, val_acc), strict=True):
            history[key].append(value)
    model.eval()
    return history
