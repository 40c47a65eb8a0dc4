"""Maps in the framework-neutral layout: what an explainer gives, and one explainer's result for one arm.

Attributions are float32 ``(N, K, H, W, C)`` (image, class, row, column, channel): every
class, or with a class table the given classes per image. Maps are compared and ranked
after summing over channels (:func:`channel_sum`), as shap's own image plot does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.io import write_npz_atomic


@dataclass
class ExplainerOutput:
    """What an explainer gives (an arm's ``_explain``), before :class:`Explanation` packages it."""

    attributions: np.ndarray  # (N, K, H, W, C) per image, class, pixel and channel; (N, 1, ...) for given classes
    base_values: np.ndarray  # (K,) E[f(background)] of the explained quantity
    outputs: np.ndarray  # (N, K) f(x) of the explained quantity
    probabilities: np.ndarray  # (N, K) the model's class probabilities

    def packaged(
        self, method: str, output: str, *, seconds: float, n_background: int, nsamples: int | None, classes
    ) -> Explanation:
        """This output as one :class:`Explanation`, in float32."""
        return Explanation(
            method=method,
            output=output,
            attributions=np.ascontiguousarray(self.attributions, dtype=np.float32),
            base_values=np.asarray(self.base_values, dtype=np.float32),
            outputs=np.asarray(self.outputs, dtype=np.float32),
            probabilities=np.asarray(self.probabilities, dtype=np.float32),
            seconds=seconds,
            n_background=n_background,
            nsamples=nsamples,
            classes=classes,
        )


@dataclass
class Explanation:
    """One explainer's result for one arm, in the framework-neutral pixel layout."""

    method: str  # a key of common.registry.METHODS
    output: str  # explained quantity: "logits" or "probability"
    attributions: np.ndarray  # float32 (N, K, H, W, C): per image, class, pixel and channel
    base_values: np.ndarray  # float32 (K,): E[f(background)] of the explained quantity
    outputs: np.ndarray  # float32 (N, K): f(x) of the explained quantity
    probabilities: np.ndarray  # float32 (N, K): the model's class probabilities
    seconds: float  # wall time of the explainer (set-up included)
    n_background: int
    nsamples: int | None = None  # samples per image of a sampled method; None for Deep SHAP
    # int (N, K'): the class of each image's k-th map, -1 where image i has no k-th map
    # (e.g. the true class of a correctly predicted image); None: every class (K' = K)
    classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = np.asarray(self.classes, dtype=np.int64).reshape(len(self.attributions), -1)

    @property
    def explained_classes(self) -> np.ndarray:
        """int (N, K'): the class of each image's k-th map (every class, or the given ones; -1: none)."""
        n, k = self.attributions.shape[:2]
        if self.classes is None:
            return np.tile(np.arange(k), (n, 1))
        return self.classes

    @property
    def n_maps(self) -> int:
        """How many maps were computed (image x class pairs)."""
        return int((self.explained_classes >= 0).sum())

    def maps_for(self, classes: np.ndarray) -> np.ndarray:
        """(N, H, W, C): each image's attributions at ``classes[i]``.

        Raises:
            KeyError: a class that was not explained for that image.
        """
        classes = np.asarray(classes, dtype=np.int64).ravel()
        hit = self.explained_classes == classes[:, None]  # (N, K')
        if not hit.any(axis=1).all():
            raise KeyError(f"class not explained for image(s) {np.flatnonzero(~hit.any(axis=1)).tolist()}")
        return self.attributions[np.arange(len(classes)), hit.argmax(axis=1)]

    @property
    def additivity_deltas(self) -> np.ndarray:
        """f(x) - E[f(background)] per computed map, float64 (n_maps,)."""
        rows, cols = np.nonzero(self.explained_classes >= 0)
        cls = self.explained_classes[rows, cols]
        return self.outputs.astype(np.float64)[rows, cls] - self.base_values.astype(np.float64)[cls]

    @property
    def additivity_errors(self) -> np.ndarray:
        """|sum(attributions) - (f(x) - E[f(background)])| per computed map, float64
        (n_maps,), in image order; the sum is taken in float64."""
        rows, cols = np.nonzero(self.explained_classes >= 0)
        total = self.attributions[rows, cols].reshape(len(rows), -1).astype(np.float64).sum(-1)
        return np.abs(total - self.additivity_deltas)

    @property
    def additivity_max_abs_error(self) -> float:
        return float(self.additivity_errors.max())

    @property
    def additivity_mean_abs_error(self) -> float:
        return float(self.additivity_errors.mean())

    @property
    def additivity_relative_error(self) -> float:
        """Mean |error| over mean |f(x) - E[f(background)]|: the error on the scale of what
        the maps distribute (0 when that is 0 and the maps are exact)."""
        scale = float(np.abs(self.additivity_deltas).mean())
        error = self.additivity_mean_abs_error
        return error / scale if scale > 0 else (0.0 if error == 0 else float("inf"))

    def save(self, path: str | Path) -> None:
        write_npz_atomic(
            path,
            method=np.array(self.method),
            output=np.array(self.output),
            attributions=self.attributions,
            base_values=self.base_values,
            outputs=self.outputs,
            probabilities=self.probabilities,
            seconds=np.array(self.seconds),
            n_background=np.array(self.n_background),
            nsamples=np.array(-1 if self.nsamples is None else self.nsamples),
            classes=np.zeros((0, 0), np.int64) if self.classes is None else self.classes,
            has_classes=np.array(self.classes is not None),
        )

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        with np.load(path) as z:
            nsamples = int(z["nsamples"])
            return cls(
                method=str(z["method"]),
                output=str(z["output"]),
                attributions=z["attributions"],
                base_values=z["base_values"],
                outputs=z["outputs"],
                probabilities=z["probabilities"],
                seconds=float(z["seconds"]),
                n_background=int(z["n_background"]),
                nsamples=None if nsamples < 0 else nsamples,
                classes=z["classes"] if "has_classes" in z.files and bool(z["has_classes"]) else None,
            )


def channel_sum(attributions: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """Sum attributions over the trailing channel axis: (..., H, W, C) -> (..., H, W), in
    ``dtype`` (None: the input's). The assessment ranks pixels by float64 sums, in which three
    float32 values add exactly; figures and agreement sum in float32, as shap's image plot does."""
    return np.asarray(attributions, dtype=dtype).sum(axis=-1)


def class_table(selection: str, predicted: np.ndarray, true: np.ndarray) -> np.ndarray | None:
    """The classes to explain per image for ``explain.classes`` (a key of
    ``common.registry.CLASS_SELECTIONS``): int (N, 1) predicted; (N, 2) predicted, then the
    true class where it differs (-1 where the prediction is right); None for every class.

    Raises:
        ValueError: an unknown selection, or predicted and true of different lengths.
    """
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    true = np.asarray(true, dtype=np.int64).ravel()
    if predicted.shape != true.shape:
        raise ValueError(f"{len(predicted)} predicted classes but {len(true)} true ones")
    if selection == "all":
        return None
    if selection == "predicted":
        return predicted[:, None]
    if selection == "predicted+true":
        return np.stack([predicted, np.where(true != predicted, true, -1)], axis=1)
    raise ValueError(f"unknown class selection {selection!r}; known: all, predicted, predicted+true")
