"""The Keras CNN arm: the published CNN in Keras, trained with the published SGD recipe.

The architecture and the recipe (SGD's learning rate, momentum and weight decay, batch size,
epochs; the normalisation from the training split's channel statistics) are the PyTorch CNN's;
everything else is Keras's own default (``common.registry.FRAMEWORK_DEFAULTS`` lists what differs).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import keras

from common.arm import Fitted, TrainingData
from common.config import StudyConfig
from common.data.statistics import channel_statistics
from common.registry import arm_spec
from keras_impl import cnn
from keras_impl.arm import KerasModelArm
from keras_impl.train import train


class KerasCNNArm(KerasModelArm):
    """The published CNN, built and trained in Keras 3."""

    spec = arm_spec("keras_cnn")
    head_prefix = ("fc1/", "fc2/", "logits/")  # the dense head: Dense(120) -> Dense(84) -> Dense(K)
    # batch norm's moving statistics and the normalisation's channel statistics are not learned
    fixed_suffixes = ("moving_mean", "moving_variance", "normalize/mean", "normalize/std")

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> KerasCNNArm:
        """A new arm; its initial weights (Keras's initialisers) follow ``cfg.seed``."""
        return cls(cnn.build_model(n_classes, image_size, name=cls.spec.name), cfg)

    def _fit(self, data: TrainingData) -> Fitted:
        self._explainers.clear()  # Deep SHAP's expected_value belongs to the old weights
        self.model.get_layer("normalize").set_statistics(*channel_statistics(data.x_train))
        s = self.settings
        sgd = partial(keras.optimizers.SGD, learning_rate=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        flip = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=self.cfg.seed)], name="hflip")
        history = train(
            self.model,
            data.x_train,
            data.y_train,
            data.x_val,
            data.y_val,
            epochs=s.epochs,
            batch_size=s.batch_size,
            optimizer=sgd,
            seed=self.cfg.seed,
            augmenter=flip if s.hflip else None,
        )
        return Fitted(history)

    def model_facts(self) -> dict[str, Any]:
        return {"flatten_width": int(self.model.get_layer("flatten").output.shape[-1])}
