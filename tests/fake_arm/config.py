"""The fake arm's settings: the ``fake:`` section of the study config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeConfig:
    epochs: int = 3  # full-batch gradient steps per epoch: 1
    lr: float = 0.5  # gradient-descent step size

    placement = ()  # no setting says where it runs

    def problems(self) -> list[str]:
        return ["fake.epochs must be positive"] if self.epochs < 1 else []
