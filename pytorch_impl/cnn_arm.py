"""The PyTorch CNN arm: the published CNN, trained with the published SGD recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.arm import PORTABLE_WEIGHTS_FILE, Fitted, TrainingData
from common.config import StudyConfig
from common.data.statistics import channel_statistics
from common.io import write_npz_atomic
from common.registry import arm_spec
from pytorch_impl.arm import TorchArm
from pytorch_impl.cnn import build_model, flatten_width
from pytorch_impl.train import train


class PyTorchArm(TorchArm):
    spec = arm_spec("pytorch")
    head_prefix = "classifier."  # the dense head: Linear(., 120) -> Linear(120, 84) -> Linear(84, K)

    build = staticmethod(build_model)

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

    def save(self, path: str | Path) -> None:
        """The checkpoint, and beside it the state dict as NumPy arrays (:data:`PORTABLE_WEIGHTS_FILE`):
        what the Keras twin carries ("Is it the framework?") without importing torch."""
        super().save(path)
        state = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        write_npz_atomic(Path(path).with_name(PORTABLE_WEIGHTS_FILE), **state)

    def model_facts(self) -> dict[str, Any]:
        return {"flatten_width": flatten_width(self.model.image_size)}
