"""The Keras twin arm: the trained PyTorch CNN carried with its weights into Keras ("Is it the
framework?"), explained there by the Keras arms' explainers.

It is not trained: the study's ``train`` step for it reads the PyTorch CNN's weights
(``weights.npz`` beside its checkpoint, NumPy arrays, so this process never imports torch) and
rebuilds the network layer for layer in Keras (:func:`keras_impl.twin.keras_twin_of_cnn`). Its
predictions and maps then differ from the PyTorch CNN's only by what the frameworks (and shap's
two backends) do differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.arm import PORTABLE_WEIGHTS_FILE, Fitted, TrainingData
from common.config import StudyConfig
from common.errors import StudyError
from common.registry import arm_spec
from keras_impl import cnn
from keras_impl.cnn_arm import KerasCNNArm
from keras_impl.twin import BATCH_NORM_EPSILON, keras_twin_of_cnn


class KerasTwinArm(KerasCNNArm):
    """The PyTorch CNN, with its trained weights, as a Keras 3 model: the Keras CNN's layers and
    weight scopes, PyTorch's batch-norm epsilon, and no training of its own."""

    spec = arm_spec("keras_twin")

    @classmethod
    def carry(cls, source_dir: Path, cfg: StudyConfig, n_classes: int, image_size: int) -> KerasTwinArm:
        """The twin of the trained network whose arm folder is ``source_dir``.

        Raises:
            StudyError: the source's weights are not there (its train stage has not run).
        """
        path = Path(source_dir) / PORTABLE_WEIGHTS_FILE
        if not path.is_file():
            raise StudyError(f"{path} is missing: the PyTorch CNN's train stage must run first (rerun with --force)")
        with np.load(path) as z:
            state = {key: z[key] for key in z.files}
        return cls(keras_twin_of_cnn(state, n_classes, image_size), cfg)

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> KerasTwinArm:
        """An untrained twin (Keras's initial weights, PyTorch's batch-norm epsilon); :meth:`carry` fills it."""
        model = cnn.build_model(n_classes, image_size, batch_norm_epsilon=BATCH_NORM_EPSILON, name=cls.spec.name)
        return cls(model, cfg)

    def _fit(self, data: TrainingData) -> Fitted:
        raise NotImplementedError("the twin is not trained: it carries the PyTorch CNN's weights (KerasTwinArm.carry)")

    def model_facts(self) -> dict[str, Any]:
        return {**super().model_facts(), "weights_of": self.spec.weights_of}
