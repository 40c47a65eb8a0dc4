"""The Keras training loop, for both Keras models: sparse categorical cross-entropy, the
optimiser each arm's recipe names (the CNN's SGD, the ResNet50 head's Adam), seeded batches.

The ResNet50 arm's routes (cached backbone features, or end to end) are ``transfer.py``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import keras
import numpy as np
from tqdm.auto import tqdm

from common.arm import HISTORY_KEYS

log = logging.getLogger(__name__)

Optimizer = Callable[[], keras.optimizers.Optimizer]  # builds the optimiser (e.g. partial(keras.optimizers.Adam, ...))


def train(
    model: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    optimizer: Optimizer,
    seed: int,
    augmenter: keras.Model | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` (inputs → class probabilities) and validate after every epoch.

    Loss: sparse categorical cross-entropy on int labels (the same as the published
    categorical cross-entropy on one-hot labels); optimiser: ``optimizer()``. Batches are
    drawn from a NumPy permutation seeded with ``seed``, one per epoch, and
    ``keras.utils.set_random_seed(seed)`` runs first, so two calls with the same
    arguments see identical batches.

    Args:
        model: pixels → probabilities, or pooled features → probabilities (the head).
        x_train, x_val: model inputs, (N, ...) uint8 pixels (an array or a store on disk:
            each step gathers its batch) or float32 features.
        y_train, y_val: int labels, (N,).
        epochs, batch_size, seed: the recipe.
        optimizer: builds the optimiser (called once, after seeding), e.g. the ResNet50 head's
            ``partial(keras.optimizers.Adam, learning_rate=1e-4)``.
        augmenter: preprocessing layers applied to the inputs while training only.

    Returns:
        The history: each of ``HISTORY_KEYS`` → one float per epoch (the training
        values are means over that epoch's batches, in training mode).
    """
    keras.utils.set_random_seed(seed)
    trainer = _compiled_trainer(model, optimizer, augmenter)
    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        loss, acc = _run_batches(trainer.train_on_batch, x_train, y_train, batches, f"epoch {epoch}/{epochs}")
        history["train_loss"].append(loss)
        history["train_accuracy"].append(acc)
        val_batches = [np.arange(i, min(i + batch_size, len(x_val))) for i in range(0, len(x_val), batch_size)]
        loss, acc = _run_batches(trainer.test_on_batch, x_val, y_val, val_batches, None)
        history["val_loss"].append(loss)
        history["val_accuracy"].append(acc)
        values = (history[k][-1] for k in HISTORY_KEYS)
        log.info("epoch %d/%d: train loss %.4f acc %.3f, val loss %.4f acc %.3f", epoch, epochs, *values)
    return history


def _compiled_trainer(model: keras.Model, optimizer: Optimizer, augmenter: keras.Model | None) -> keras.Model:
    """``model`` (or, with ``augmenter``, a model that augments its inputs first, in training only:
    the saved model does not contain the augmentation) compiled with the published recipe."""
    trainer = model
    if augmenter is not None:
        inputs = keras.Input(model.input_shape[1:], name="pixels")
        trainer = keras.Model(inputs, model(augmenter(inputs)), name=f"{model.name}_augmented")
    trainer.compile(
        optimizer=optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return trainer


def _run_batches(
    step, x: np.ndarray, y: np.ndarray, batches: list[np.ndarray], desc: str | None
) -> tuple[float, float]:
    """Run ``step`` (train_on_batch or test_on_batch) over index batches; mean loss and accuracy."""
    total_loss = total_acc = 0.0
    for idx in tqdm(
        batches, desc=desc, unit="batch", leave=False, disable=True if desc is None else None
    ):  # None: off when not a TTY
        logs = step(x[idx].astype(np.float32), y[idx], return_dict=True)
        total_loss += logs["loss"] * len(idx)
        total_acc += logs["accuracy"] * len(idx)
    n = sum(len(idx) for idx in batches)
    return total_loss / n, total_acc / n
