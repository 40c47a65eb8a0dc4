"""The one small interface every arm implements, NumPy in and out.

Images cross this boundary as uint8 ``(N, H, W, C)`` arrays (NHWC, RGB, raw 0..255
pixels), labels as int64 ``(N,)``, class scores as float32 ``(N, K)`` and attributions as
float32 ``(N, K, H, W, C)``. Layout conversions (NCHW in PyTorch) and preprocessing
(normalisation in the CNN, ResNet50's ``preprocess_input`` in Keras) live inside the
arms, so the runner treats every arm alike and their maps can be laid side by side.

The base class does what is the same in every arm once (template methods): the public
``create``, ``fit``, ``predict_proba`` and ``explain`` check their inputs, seed, time and
package the results; an arm implements ``_create``, ``_fit``, ``_predict_proba`` and
``_explain`` (what its framework does differently), ``save``/``load``, and reports its
facts (``info``) and fallbacks (``fallbacks``).

For the assessment of the maps (``experiments/assess.py``) an arm also gives the gradient of
one class's explained output with respect to the raw pixels (``_gradients``: the
gradient × input baseline is computed from it here, once for every arm), its learned
weights as NumPy arrays and a way to replace some of them in place
(``learned_weights``/``_set_weights``: the model-randomisation check draws the new
values here, by one rule for every framework, and puts the trained ones back after) and, where an independent library
implements the same estimator, its maps from that library (``_explain_independently``).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.config import StudyConfig
from common.data.imagestore import ImageStore
from common.explanation import ExplainerOutput, Explanation
from common.quality.randomisation import randomize_weights
from common.registry import OUTPUTS, RANDOMISATION_SCOPES, ArmSpec, MethodSpec, method_spec
from common.seeding import image_seeds, seed_everything, seeded

HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Beside a model whose weights a twin carries into another framework (common.registry.ArmSpec.weights_of):
# its weights as NumPy arrays by name, so the twin's process reads them without importing the source's framework.
PORTABLE_WEIGHTS_FILE = "weights.npz"


@dataclass(frozen=True)
class TrainingData:
    """What an arm trains on: the shared split's arrays and the key of their pixels."""

    x_train: np.ndarray | ImageStore  # uint8 (N, H, W, C); a store is read a batch at a time
    y_train: np.ndarray  # int64 (N,)
    x_val: np.ndarray | ImageStore  # uint8 (M, H, W, C)
    y_val: np.ndarray  # int64 (M,)
    data_key: str  # content key of the decoded pixels (for caches derived from them)
    cache_dir: Path | None = None  # where an arm may cache derived data (Keras features)


@dataclass
class Fitted:
    """What an arm's ``_fit`` returns: the history and facts about the run."""

    history: dict[str, list[float]]  # HISTORY_KEYS -> one value per epoch
    info: dict[str, Any] = field(default_factory=dict)  # e.g. device, feature_seconds


@dataclass
class TrainResult:
    """Per-epoch history (same keys in every arm) and what the run should record."""

    history: dict[str, list[float]]  # HISTORY_KEYS -> one value per epoch
    best_val_epoch: int  # 1-based epoch with the lowest validation loss (the final model is kept)
    train_seconds: float  # wall time of the whole fit, feature extraction included
    info: dict[str, Any] = field(default_factory=dict)  # e.g. device, backbone_weights, feature_seconds
    fallbacks: list[str] = field(default_factory=list)  # where the run departs from the plan, in words


def best_epoch(history: dict[str, list[float]]) -> int:
    """The 1-based epoch with the lowest validation loss (the first, on ties)."""
    return int(np.argmin(history["val_loss"])) + 1


class Arm(abc.ABC):
    """A trainable, explainable image classifier of one framework.

    Life cycle: ``create(cfg, n_classes, image_size)`` → ``fit(data)`` → ``save(path)``;
    later ``load(path, cfg)`` → ``predict_proba`` / ``explain``.
    """

    spec: ClassVar[ArmSpec]  # the arm's entry in common.registry.ARMS
    explain_batch_size: ClassVar[int] = 50  # Gradient SHAP samples per forward/backward pass (shap's default)
    cfg: StudyConfig

    @property
    def independent_library(self) -> str | None:
        """A library implementing the same estimators, to cross-check shap's maps (the registry's
        ``ArmSpec.independent_library``, e.g. "captum"); None: none."""
        return self.spec.independent_library

    @property
    def settings(self) -> Any:
        """This arm's section of the study config."""
        return self.cfg.arm(self.spec.key)

    @property
    @abc.abstractmethod
    def image_size(self) -> int:
        """Square input side in pixels."""

    @property
    @abc.abstractmethod
    def n_classes(self) -> int:
        """Number of classes K."""

    # ------------------------------------------------------------------ template methods

    @classmethod
    def create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> Arm:
        """A new, untrained arm; its initial weights depend on ``cfg.seed`` alone."""
        seed_everything(cfg.seed)
        return cls._create(cfg, n_classes, image_size)

    def fit(self, data: TrainingData) -> TrainResult:
        """Train on ``data.x_train``/``y_train``, validating on ``x_val``/``y_val`` each epoch.

        Raises:
            ValueError: images of the wrong shape or type, or labels that do not match them.
        """
        for what, x, y in (("x_train", data.x_train, data.y_train), ("x_val", data.x_val, data.y_val)):
            self.check_images(x, what)
            self._check_labels(y, len(x), what)
        seed_everything(self.cfg.seed)
        start = time.perf_counter()
        fitted = self._fit(data)
        missing = [k for k in HISTORY_KEYS if len(fitted.history.get(k, ())) == 0]
        if missing:
            raise RuntimeError(f"{type(self).__name__}._fit returned no history for {', '.join(missing)}")
        info = {**self.info(), **fitted.info}
        return TrainResult(
            history=fitted.history,
            best_val_epoch=best_epoch(fitted.history),
            train_seconds=time.perf_counter() - start,
            info=info,
            fallbacks=self.fallbacks(info),
        )

    def predict_proba(self, images: np.ndarray | ImageStore) -> np.ndarray:
        """Class probabilities, float32 (N, K), for uint8 (N, H, W, C) images (an array, or
        a store that the arm reads a batch at a time)."""
        self.check_images(images, "images")
        if len(images) == 0:
            return np.zeros((0, self.n_classes), np.float32)
        return np.asarray(self._predict_proba(images), dtype=np.float32)

    def explain(
        self,
        images: np.ndarray,
        background: np.ndarray,
        method: str,
        *,
        nsamples: int,
        seed: int,
        output: str = "logits",
        classes: np.ndarray | None = None,
    ) -> Explanation:
        """Explain uint8 ``images`` against uint8 ``background`` with ``method`` (a key of
        ``common.registry.METHODS``): every class (attributions (N, K, H, W, C)), or with
        ``classes`` the given ones: int (N,) for one class per image, or (N, K') for up to K'
        per image with -1 where an image has fewer (attributions (N, K', H, W, C), zero
        where nothing was explained). Only the given classes are explained: each column of
        ``classes`` is one pass of the explainer over the images that have a class in it.

        A sampled method draws each image's samples from ``seed`` and the image's pixels
        (:func:`common.seeding.image_seeds`), so a map does not depend on which other images
        or classes are explained with it. The global random state is seeded for the call and
        restored after it (shap reseeds NumPy's global generator): no side effects.

        Raises:
            ValueError: an unknown method or output, images of the wrong shape or type, or
                classes that are not valid classes per image.
        """
        spec = method_spec(method)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.check_images(images, "images")
        self.check_images(background, "background")
        if classes is not None:
            classes = self._check_class_table(classes, len(images))
        start = time.perf_counter()
        seeds = image_seeds(seed, images)
        # The explainers draw from NumPy (shap's rseed, the per-image seeds) and PyTorch (Captum);
        # no TensorFlow random op runs at inference, and resetting TensorFlow's seed would make
        # every traced graph rebuild its kernels on each call (common.seeding.seed_everything).
        with seeded(seed, tensorflow=False):
            if classes is None:
                result = self._explain_classes(images, background, spec, nsamples, seeds, output, None)
            else:
                result = self._explain_table(images, background, spec, nsamples, seeds, output, classes)
        n_maps = self.n_classes if classes is None else classes.shape[1]
        expected = (len(images), n_maps, *images.shape[1:])
        if result.attributions.shape != expected:
            raise RuntimeError(
                f"{type(self).__name__}._explain gave attributions {result.attributions.shape}, expected {expected}"
            )
        return result.packaged(
            method,
            output,
            seconds=time.perf_counter() - start,
            n_background=len(background),
            nsamples=nsamples if spec.sampled else None,
            classes=classes,
        )

    def _explain_table(
        self, images, background, spec: MethodSpec, nsamples, seeds, output, classes: np.ndarray
    ) -> ExplainerOutput:
        """The maps of a class table (N, K'): one pass of the explainer per column, over the
        images that have a class in it."""
        # column 0 holds a class for every image: its pass gives every image's outputs
        result = self._explain_classes(images, background, spec, nsamples, seeds, output, classes[:, 0])
        maps = np.zeros((len(images), classes.shape[1], *images.shape[1:]), np.float32)
        maps[:, 0] = result.attributions[:, 0]
        for k in range(1, classes.shape[1]):
            rows = np.flatnonzero(classes[:, k] >= 0)
            if len(rows):
                part = self._explain_classes(
                    images[rows], background, spec, nsamples, seeds[rows], output, classes[rows, k]
                )
                maps[rows, k] = part.attributions[:, 0]
        result.attributions = maps
        return result

    def _explain_classes(self, images, background, spec, nsamples, seeds, output, classes) -> ExplainerOutput:
        if spec.baseline:
            return self._gradient_times_input(images, background, output=output, classes=classes)
        return self._explain(
            images, background, spec.key, nsamples=nsamples, seeds=seeds, output=output, classes=classes
        )

    def explain_independently(
        self,
        images: np.ndarray,
        background: np.ndarray,
        method: str,
        *,
        nsamples: int,
        seed: int,
        classes: np.ndarray,
    ) -> Explanation | None:
        """The same estimator as ``explain(..., method, classes=classes)`` (logits) from an
        independent library (:attr:`independent_library`), or None where the arm has none
        or that library has no counterpart of ``method``."""
        if self.independent_library is None:
            return None
        self.check_images(images, "images")
        self.check_images(background, "background")
        classes = np.asarray(classes, dtype=np.int64)
        self._check_labels(classes, len(images), "classes")
        start = time.perf_counter()
        with seeded(seed, tensorflow=False):  # as in explain
            result = self._explain_independently(
                images, background, method, nsamples=nsamples, seed=seed, classes=classes
            )
        if result is None:
            return None
        return result.packaged(
            method,
            "logits",
            seconds=time.perf_counter() - start,
            n_background=len(background),
            nsamples=nsamples if method_spec(method).sampled else None,
            classes=classes,
        )

    @contextlib.contextmanager
    def randomized(self, scope: str, seed: int) -> Iterator[Arm]:
        """For the ``with`` block, this arm with its learned weights in ``scope`` (a key of
        ``common.registry.RANDOMISATION_SCOPES``) re-drawn by the one rule every arm shares
        (:func:`common.quality.randomisation.randomize_weights`); the trained weights are put back after.

        In place rather than a copy, so whatever an arm built on its model (TensorFlow's
        traced explainer graphs) serves the randomised weights too instead of being rebuilt.

        Raises:
            ValueError: an unknown scope, or one that holds no weights in this arm.
        """
        if scope not in RANDOMISATION_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(RANDOMISATION_SCOPES)}, got {scope!r}")
        trained = self.learned_weights(scope)
        if not trained:
            raise ValueError(f"{type(self).__name__} has no learned weights in scope {scope!r}")
        # The draw depends on the trained weights, the scope and the seed alone: drawn once and
        # reused by every method's assessment (a ResNet50 holds 25 million weights).
        draws = self.__dict__.setdefault("_randomised_weights", {})
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in trained.items():
            digest.update(name.encode() + np.ascontiguousarray(tensor).tobytes())
        key = (scope, seed, digest.hexdigest())
        if key not in draws:
            draws[key] = randomize_weights(trained, seed)
        self._set_weights(draws[key])
        try:
            yield self
        finally:
            self._set_weights(trained)

    def _gradient_times_input(
        self, images: np.ndarray, background: np.ndarray, *, output: str, classes: np.ndarray | None
    ) -> ExplainerOutput:
        """Gradient × (x − mean(background)) of every class (or the given ones), from the
        arm's gradients; the base values are E[f(background)]."""
        x = images.astype(np.float64)
        offset = x - background.astype(np.float64).mean(axis=0)  # (N, H, W, C)
        wanted = np.tile(np.arange(self.n_classes), (len(images), 1)) if classes is None else classes[:, None]
        maps, outputs = [], None
        for k in range(wanted.shape[1]):
            grads, outputs = self._gradients(images, wanted[:, k], output=output)
            maps.append(np.asarray(grads, np.float64) * offset)
        bg_outputs = self._forward(background, output=output)  # E[f(background)]: a forward pass suffices
        probabilities = self.predict_proba(images)
        return ExplainerOutput(
            attributions=np.stack(maps, axis=1),
            base_values=np.asarray(bg_outputs, np.float64).mean(axis=0),
            outputs=outputs,
            probabilities=probabilities,
        )

    def check_images(self, images: np.ndarray, what: str) -> None:
        """Raise ValueError unless ``images`` is uint8 (N, S, S, 3) for this arm's size S."""
        expected = (self.image_size, self.image_size, 3)
        if not isinstance(images, ImageStore):  # a store says its shape without being read
            images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"{what}: expected uint8 (N, {', '.join(map(str, expected))}) NHWC images, "
                f"got {images.dtype} {images.shape}"
            )

    def _check_class_table(self, classes: np.ndarray, n: int) -> np.ndarray:
        """``classes`` as int64 (N, K'): (N,) becomes one column; -1 marks "no class" in
        columns after the first, which must hold a valid class for every image."""
        classes = np.asarray(classes)
        if classes.ndim == 1:
            classes = classes[:, None]
        if classes.ndim != 2 or classes.shape[0] != n or classes.shape[1] < 1:
            raise ValueError(f"classes: expected {n} rows of classes, got shape {classes.shape}")
        self._check_labels(classes[:, 0], n, "classes")
        rest = classes[:, 1:]
        if rest.size and (rest.min() < -1 or rest.max() >= self.n_classes):
            raise ValueError(f"classes: later columns must lie in -1..{self.n_classes - 1} (-1: none)")
        return classes.astype(np.int64)

    def _check_labels(self, labels: np.ndarray, n: int, what: str) -> None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{what}: expected {n} integer labels, got {labels.dtype} {labels.shape}")
        if n and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"{what}: labels must lie in 0..{self.n_classes - 1}")

    # ------------------------------------------------------------------ what each arm implements

    @classmethod
    @abc.abstractmethod
    def _create(cls, cfg: StudyConfig, n_classes: int, image_size: int) -> Arm:
        """A new, untrained arm (the global random state is already seeded)."""

    @abc.abstractmethod
    def _fit(self, data: TrainingData) -> Fitted:
        """Train in place on checked inputs; return the history (every HISTORY_KEYS key).
        Gather each step's batch from ``data.x_train``/``x_val`` (``x[index_array]``): they
        may be stores on disk, whose whole content must not be read at once."""

    @abc.abstractmethod
    def _predict_proba(self, images: np.ndarray | ImageStore) -> np.ndarray:
        """Class probabilities (N, K) for checked, non-empty uint8 images; read a store a
        batch at a time (``images[i : i + batch]``)."""

    @abc.abstractmethod
    def _explain(
        self,
        images: np.ndarray,
        background: np.ndarray,
        method: str,
        *,
        nsamples: int,
        seeds: np.ndarray,
        output: str,
        classes: np.ndarray | None,
    ) -> ExplainerOutput:
        """A SHAP method's attributions for checked images and output: every class
        (N, K, H, W, C), or with ``classes`` (int (N,)) only ``classes[i]`` for image i
        (N, 1, H, W, C). A sampled method draws image i's samples with ``seeds[i]`` (uint32),
        the same for every class of that image."""

    @abc.abstractmethod
    def _gradients(self, images: np.ndarray, classes: np.ndarray, *, output: str) -> tuple[np.ndarray, np.ndarray]:
        """d f_c(x) / d x for checked uint8 images, with c = ``classes[i]`` for image i, as
        (N, H, W, C) (raw-pixel gradient, the model's own preprocessing included), and
        the explained outputs f(x) (N, K)."""

    def _forward(self, images: np.ndarray, *, output: str) -> np.ndarray:
        """The explained outputs f(x) (N, K) of checked uint8 images (logits or probabilities,
        per ``output``). This default takes them from :meth:`_gradients`; arms override it with
        a forward pass alone (a third of the work)."""
        return self._gradients(images, np.zeros(len(images), np.int64), output=output)[1]

    def learned_weights(self, scope: str) -> dict[str, np.ndarray]:
        """The learned tensors in ``scope`` as NumPy arrays, in a fixed order, by name:
        kernels, biases and batch-norm scale and shift (not batch-norm running statistics,
        not the fixed preprocessing). Arms that support the randomisation check override it."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its weights")

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Replace the named tensors (names from :meth:`learned_weights`) in place."""
        raise NotImplementedError(f"{type(self).__name__} cannot replace its weights")

    def _explain_independently(
        self, images: np.ndarray, background: np.ndarray, method: str, *, nsamples: int, seed: int, classes: np.ndarray
    ) -> ExplainerOutput | None:
        """The maps of the arm's :attr:`independent_library` (logits, given classes), or None
        where it has no counterpart of ``method``."""
        return None

    @abc.abstractmethod
    def save(self, path: str | Path) -> None:
        """Save the full pixel-input model to ``path`` (written atomically)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | Path, cfg: StudyConfig) -> Arm:
        """Load a model written by :meth:`save`; it predicts exactly what the saved one did."""

    def info(self) -> dict[str, Any]:
        """Facts about this model worth recording (parameters, weights used, device)."""
        return {}

    def fallbacks(self, info: dict[str, Any]) -> list[str]:
        """Where a finished training run departed from the plan, one sentence each, given
        its recorded ``info`` (e.g. no GPU although one was asked for)."""
        return []
