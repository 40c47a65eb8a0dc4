"""The PyTorch arms' settings: the ``pytorch:`` (the published CNN) and ``pytorch_resnet50:``
sections of the study config."""

from __future__ import annotations

from dataclasses import dataclass

from common.architectures import cnn_macs, resnet50_macs
from common.registry import published_arm

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class PyTorchConfig:
    epochs: int = 15  # published: 15
    batch_size: int = 64  # published: 64
    lr: float = 0.01  # SGD learning rate, published: 0.01
    momentum: float = 0.9  # published: 0.9
    weight_decay: float = 1e-3  # published: 1e-3
    hflip: bool = False  # random horizontal flips while training (published: none)
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"

    # Settings that say where the arm runs, not what it computes: left out of its stage keys.
    placement = ("device",)

    def forward_macs(self, image_size: int, n_classes: int) -> int:
        """Multiply-adds of one image through the CNN (its convolutions and dense layers): the cost
        unit the assess stage's budget weighs this arm's passes with (experiments/budget.py)."""
        return cnn_macs(image_size, n_classes)

    def problems(self) -> list[str]:
        """What no run could use, one message per problem (empty when the section is valid)."""
        problems = []
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch_size must be positive")
        if self.device not in DEVICES:
            problems.append(f"pytorch.device must be auto, cpu or cuda, got {self.device!r}")
        return problems


@dataclass(frozen=True)
class PyTorchResNet50Config:
    """The ``pytorch_resnet50:`` section: the Keras arm's recipe, in PyTorch.

    The backbone holds the Keras arm's weights, converted (``pytorch_impl/weights.py``): which
    ones is the Keras arm's setting ``keras.weights`` (imagenet, none or a file), read from that
    section (``borrowed``) so that both ResNet50s hold the same backbone by construction.
    """

    epochs: int = 10  # as the Keras arm (published: 10)
    batch_size: int = 32  # as the Keras arm (published: 32)
    lr: float = 1e-4  # Adam learning rate, as the Keras arm (published: 1e-4)
    dense_units: int = 256  # published head: Dense(256, relu)
    dropout: float = 0.5  # published head: Dropout(0.5)
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"

    placement = ("device",)  # where it runs, not what it computes: left out of its stage keys

    @property
    def backbone_arm(self) -> str:
        """The arm whose ResNet50 backbone this one converts and holds: the published Keras ResNet50."""
        return published_arm("ResNet50").key

    @property
    def borrowed(self) -> tuple[tuple[str, str], ...]:
        """(section, setting) of other arms it reads: part of its stage keys."""
        return ((self.backbone_arm, "weights"),)

    def forward_macs(self, image_size: int, n_classes: int) -> int:
        """Multiply-adds of one image through ResNet50 (Keras's layout) and the head."""
        return resnet50_macs(image_size, n_classes, self.dense_units)

    def problems(self) -> list[str]:
        """What no run could use, one message per problem (empty when the section is valid)."""
        problems = []
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("pytorch_resnet50.epochs and batch_size must be positive")
        if self.device not in DEVICES:
            problems.append(f"pytorch_resnet50.device must be auto, cpu or cuda, got {self.device!r}")
        return problems
