"""The fake arm's settings: the ``fake:`` section of the study config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeConfig:
    epochs: int = 3  # full-batch gradient steps per epoch: 1
    lr: float = 0.5  # gradient-descent step size

    placement = ()  # no setting says where it runs

    def forward_macs(self, image_size: int, n_classes: int) -> int:
        """Multiply-adds of one image through the linear model: every pixel value times every class."""
        return image_size * image_size * 3 * n_classes

    def problems(self) -> list[str]:
        return ["fake.epochs must be positive"] if self.epochs < 1 else []
