"""The fake arm behind the common interface."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from common.arm import Arm, Fitted, TrainingData
from common.config import StudyConfig
from common.explanation import ExplainerOutput
from common.io import atomic_path
from tests.fake_arm import SECOND_SPEC, SPEC
from tests.fake_arm.explain import explain, gradients
from tests.fake_arm.model import logits, softmax
from tests.fake_arm.train import train

FAIL_SEED_VARIABLE = "FAKE_ARM_FAIL_SEED"  # training with this seed raises (tests of failed units)


class FakeArm(Arm):
    spec = SPEC

    def __init__(self, weights: np.ndarray, bias: np.ndarray, image_size: int, cfg: StudyConfig):
        self.weights, self.bias, self._image_size, self.cfg = weights, bias, image_size, cfg

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def n_classes(self) -> int:
        return len(self.bias)

    @classmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> FakeArm:
        weights = np.random.default_rng(cfg.seed).normal(0, 0.01, (n_classes, image_size * image_size * 3))
        return cls(weights, np.zeros(n_classes), image_size, cfg)

    def _fit(self, data: TrainingData) -> Fitted:
        if os.environ.get(FAIL_SEED_VARIABLE) == str(self.cfg.seed):  # a unit made to fail, for the tests
            raise RuntimeError(f"{FAIL_SEED_VARIABLE}={self.cfg.seed}: this training run fails on purpose")
        history = train(
            self.weights,
            self.bias,
            np.asarray(data.x_train),  # a tiny test double: reads the whole (store) split
            data.y_train,
            np.asarray(data.x_val),
            data.y_val,
            epochs=self.settings.epochs,
            lr=self.settings.lr,
        )
        return Fitted(history, info={"device": "cpu (NumPy)"})

    def _predict_proba(self, images: np.ndarray) -> np.ndarray:
        return softmax(logits(self.weights, self.bias, np.asarray(images)))

    def _explain(self, images, background, method, *, nsamples, seeds, output, classes) -> ExplainerOutput:
        if output != "logits":
            raise ValueError("the fake arm explains logits only")
        return explain(
            self.weights, self.bias, images, background, method, nsamples=nsamples, seeds=seeds, classes=classes
        )

    def _gradients(self, images, classes, *, output):
        if output != "logits":
            raise ValueError("the fake arm explains logits only")
        return gradients(self.weights, self.bias, images, classes)

    def _forward(self, images, *, output):
        z = logits(self.weights, self.bias, np.asarray(images))
        return softmax(z) if output == "probability" else z

    def learned_weights(self, scope: str) -> dict[str, np.ndarray]:
        return {"weights": self.weights.copy(), "bias": self.bias.copy()}  # one layer: it is the head

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.weights, self.bias = weights["weights"].copy(), weights["bias"].copy()

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            np.savez(tmp, weights=self.weights, bias=self.bias, image_size=self._image_size)

    @classmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> FakeArm:
        with np.load(path) as z:
            return cls(z["weights"], z["bias"], int(z["image_size"]), cfg)

    def info(self) -> dict[str, Any]:
        return {"n_parameters": int(self.weights.size + self.bias.size)}


class SecondFakeArm(FakeArm):
    """The fake model under its second registry entry (its own config section, ``fake2:``)."""

    spec = SECOND_SPEC
