"""The Keras arms' settings: the ``keras:`` (ResNet50, the published Keras arm) and ``keras_cnn:``
sections of the study config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.architectures import cnn_macs, resnet50_macs


@dataclass(frozen=True)
class KerasConfig:
    epochs: int = 10  # published: 10
    batch_size: int = 32  # published: 32
    lr: float = 1e-4  # Adam learning rate, published: 1e-4
    weights: str = "imagenet"  # "imagenet", "none" (random on purpose) or a path to a no-top .h5 file
    dense_units: int = 256  # published head: Dense(256, relu)
    dropout: float = 0.5  # published head: Dropout(0.5)
    augment: bool = False  # published augmentation (rotation, zoom, shift, shear, flip)
    fine_tune: bool = False  # unfreeze the backbone (slow on a CPU)

    # Settings that say where the arm runs, not what it computes: left out of its stage keys.
    placement = ()

    def forward_macs(self, image_size: int, n_classes: int) -> int:
        """Multiply-adds of one image through ResNet50 (Keras's: each stage's first block strides in
        its first 1x1 convolution) and the head: the cost unit the assess stage's budget weighs this
        arm's passes with (experiments/budget.py). Batch norm, additions and pooling are left out."""
        return resnet50_macs(image_size, n_classes, self.dense_units)

    def problems(self) -> list[str]:
        """What no run could use, one message per problem (empty when the section is valid)."""
        problems = []
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch_size must be positive")
        w = self.weights
        if w not in ("imagenet", "none") and not Path(w).expanduser().is_file():
            problems.append(f"keras.weights must be 'imagenet', 'none' or an existing weights file, got {w!r}")
        return problems


@dataclass(frozen=True)
class KerasCNNConfig:
    """The ``keras_cnn:`` section: the published CNN's recipe (the ``pytorch:`` section's
    defaults), in Keras; Keras's own defaults otherwise (``common.registry.FRAMEWORK_DEFAULTS``)."""

    epochs: int = 15  # as the PyTorch CNN (published: 15)
    batch_size: int = 64  # as the PyTorch CNN (published: 64)
    lr: float = 0.01  # SGD learning rate, as the PyTorch CNN (published: 0.01)
    momentum: float = 0.9  # as the PyTorch CNN (published: 0.9)
    weight_decay: float = 1e-3  # as the PyTorch CNN (published: 1e-3); Keras decays the weights decoupled
    hflip: bool = False  # random horizontal flips while training (published: none)

    placement = ()  # no setting says where it runs

    def forward_macs(self, image_size: int, n_classes: int) -> int:
        """Multiply-adds of one image through the CNN (its convolutions and dense layers)."""
        return cnn_macs(image_size, n_classes)

    def problems(self) -> list[str]:
        """What no run could use, one message per problem (empty when the section is valid)."""
        return ["keras_cnn.epochs and batch_size must be positive"] if self.epochs < 1 or self.batch_size < 1 else []


@dataclass(frozen=True)
class KerasTwinConfig:
    """The ``keras_twin:`` section: the Keras twin of the PyTorch CNN is not trained (it carries the
    CNN's weights), so only how many images go through it at once."""

    batch_size: int = 64  # images per forward pass (the PyTorch CNN's batch size)

    placement = ()  # no setting says where it runs

    def forward_macs(self, image_size: int, n_classes: int) -> int:
        """Multiply-adds of one image through the CNN (its convolutions and dense layers)."""
        return cnn_macs(image_size, n_classes)

    def problems(self) -> list[str]:
        """What no run could use, one message per problem (empty when the section is valid)."""
        return ["keras_twin.batch_size must be positive"] if self.batch_size < 1 else []
