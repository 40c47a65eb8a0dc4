"""The training loops: cross-entropy, the published CNN's SGD with momentum and weight decay on
pixels, and the ResNet50 head's Adam on pooled backbone features (as the Keras arm trains it)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.arm import HISTORY_KEYS
from common.data.imagestore import ImageStore
from pytorch_impl.config import PyTorchConfig
from pytorch_impl.model import as_input, images_to_tensor

Images = np.ndarray | ImageStore  # uint8 (N, H, W, C): an array, or the decode cache read a batch at a time
ToInput = Callable[[np.ndarray, torch.device], torch.Tensor]  # a batch of inputs as the model's input tensor


def pixels(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC images as the model's raw-pixel input (B, C, H, W) on ``device``."""
    return as_input(images_to_tensor(batch, device))


def features(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 (B, F) pooled features as a tensor on ``device``."""
    return torch.as_tensor(batch, dtype=torch.float32, device=device)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` or ``"cuda"``: CUDA when available; CPU otherwise (and for ``"cpu"``)."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        warnings.warn("pytorch.device is 'cuda' but CUDA is not available: using the CPU", stacklevel=2)
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Images, y: torch.Tensor, batch_size: int, to_input: ToInput = pixels
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode on ``x`` (uint8 NHWC images, or
    what ``to_input`` takes), read a batch at a time."""
    model.eval()
    device = y.device
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = to_input(x[start : start + batch_size], device)  # (B, C, H, W) pixels, or (B, F) features
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
    *,
    batch_size: int,
    generator: torch.Generator,
    hflip: bool = False,
    to_input: ToInput = pixels,
    desc: str = "",
) -> tuple[float, float]:
    """One shuffled pass over ``x`` (uint8 NHWC images, or what ``to_input`` takes; each step
    gathers its batch), flipping images at random with ``hflip``; returns the running mean loss
    and accuracy."""
    model.train()
    device = y.device
    loss_fn = nn.CrossEntropyLoss()
    # The order (and flips) come from a CPU generator, so they do not depend on the device.
    order = torch.randperm(len(x), generator=generator)
    loss_sum, correct = 0.0, 0
    for start in tqdm(range(0, len(x), batch_size), desc=desc, leave=False, disable=None):
        idx = order[start : start + batch_size]
        xb = to_input(x[idx.numpy()], device)  # (B, C, H, W) raw pixels in [0, 255], or (B, F) features
        yb = y[idx.to(device)]
        if hflip:
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
    """Train the CNN ``model`` in place with the published recipe (SGD with momentum and weight
    decay) for ``cfg.epochs`` epochs, validating after each; the final model is kept.

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
    loop = dict(batch_size=cfg.batch_size, generator=generator, hflip=cfg.hflip, to_input=pixels)
    return run_epochs(model, optimizer, (x_train, y_train), (x_val, y_val), epochs=cfg.epochs, **loop)


def train_head(
    head: nn.Module,
    f_train: np.ndarray,
    y_train: torch.Tensor,
    f_val: np.ndarray,
    y_val: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> dict[str, list[float]]:
    """Train a classification ``head`` in place on pooled backbone features with the Keras arm's
    recipe in PyTorch's terms: Adam(``lr``) with PyTorch's defaults, cross-entropy on the logits,
    seeded shuffles as :func:`train`; the final head is kept.

    Args:
        head: features (B, F) → logits (B, K), on the labels' device.
        f_train, f_val: float32 (N, F) features.
        y_train, y_val: int64 (N,) labels on the head's device.

    Returns:
        The history, as :func:`train`'s.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loop = dict(batch_size=batch_size, generator=generator, to_input=features)
    return run_epochs(head, optimizer, (f_train, y_train), (f_val, y_val), epochs=epochs, **loop)


def run_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: tuple[Images, torch.Tensor],
    val_set: tuple[Images, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    hflip: bool = False,
    to_input: ToInput = pixels,
) -> dict[str, list[float]]:
    """``epochs`` shuffled passes over ``train_set``, each followed by a validation pass over
    ``val_set`` in eval mode; the history (``HISTORY_KEYS``), and the model left in eval mode."""
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    for epoch in range(1, epochs + 1):
        train_loss, train_acc = train_one_epoch(
            model,
            optimizer,
            *train_set,
            batch_size=batch_size,
            generator=generator,
            hflip=hflip,
            to_input=to_input,
            desc=f"epoch {epoch}/{epochs}",
        )
        val_loss, val_acc = evaluate(model, *val_set, batch_size, to_input)
        for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, val_loss, val_acc), strict=True):
            history[key].append(value)
    model.eval()
    return history
