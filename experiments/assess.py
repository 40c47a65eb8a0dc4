"""The assess stage, in the arm's process: how faithful each model's maps are, and whether they pass sanity checks.

Implemented once, on the arm interface (uint8 images in, class probabilities and maps out), so
every arm is measured by the same code with the same perturbations, the same pixels and the
same random draws. For every model x method, on the explained images, with the model's
predicted class as the explained class:

1. **Deletion and insertion curves** (Petsiuk et al. 2018): pixels ranked by the
   channel-summed map are removed (replaced by the background set's mean image) or inserted
   into a baseline image (the mean image, or a blurred copy) in ``steps`` equal steps; the
   probability of the explained class is recorded at each step. The same images under
   ``random_orders`` random pixel orders are the baseline every map must beat (computed once
   per model: :func:`assess_random`).
2. **Model randomisation** (Adebayo et al. 2018): the learned weights in each scope are
   re-drawn by one rule (:func:`common.quality.randomisation.randomize_weights`) and the same
   images are explained again; the Spearman correlation of |map| (and of the signed map)
   between the trained and the randomised model is recorded.
3. **Random logit** (Sixt et al. 2020): the map of the explained class against the map of
   another class (drawn at random, seeded) on the same image.
4. **Sparseness**: the Gini index of |map| (Hurley & Rickard 2009).
5. **Noise floor** of a sampled method: two seeds' maps of the same model.
6. **Independent cross-check**: the same estimator from an independent library where the
   arm has one (Captum for PyTorch).

Rank correlations leave out pixels that are zero in both maps compared (padding, or pixels
equal to the background everywhere), which would otherwise count as agreement. Randomisation,
random logit, noise floor and cross-check run on ``n_sanity`` of the explained images (spread
over the selection, :func:`experiments.layout.sanity_positions`) to bound their cost.

:func:`assess_random` and :func:`assess_method` return per-image arrays, saved as
``<arm>/assess_<what>.npz`` by :class:`ArmAssessment`; the evaluate stage summarises them
(:mod:`experiments.evaluate_quality`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np

from common.arm import Arm
from common.config import AssessConfig, StudyConfig
from common.explanation import Explanation, channel_sum
from common.io import write_npz_atomic
from common.quality.agreement import nonzero_mask, rank_correlation
from common.quality.complexity import gini
from common.quality.faithfulness import (
    blurred,
    fractions,
    mean_image,
    perturbation_curves,
    random_orders,
    rank_pixels,
)
from common.registry import method_spec
from experiments.layout import ArmPaths, sanity_positions

MEAN_INSERTION_BELOW = (
    64  # "auto" insertion baseline: the mean image below this size (a blur leaves small digits readable)
)


@dataclass(frozen=True)
class AssessInputs:
    """What every assessment of one arm shares: the images, the baselines and the classes."""

    images: np.ndarray  # uint8 (N, H, W, C): the explained images
    background: np.ndarray  # uint8 (B, H, W, C)
    classes: np.ndarray  # int (N,): the explained class (the trained model's prediction)
    other_classes: np.ndarray  # int (N,): another class per image, for the random-logit check
    sanity: np.ndarray  # int (M,): positions (in images) of the randomisation/noise/cross-check subset
    fill: np.ndarray  # uint8 (H, W, C): what deletion puts in (the background's mean image)
    insertion_start: np.ndarray  # uint8 (N, H, W, C): what insertion starts from
    fractions: np.ndarray  # (S,)


def insertion_baseline(settings: AssessConfig, image_size: int) -> str:
    """ "mean" or "blur": the setting, or for "auto" the mean image below 64 pixels."""
    if settings.insertion_baseline != "auto":
        return settings.insertion_baseline
    return "mean" if image_size < MEAN_INSERTION_BELOW else "blur"


def insertion_baseline_text(settings: AssessConfig, image_size: int) -> str:
    """What insertion starts from, in words (the report's settings list)."""
    if insertion_baseline(settings, image_size) == "mean":
        return "the background set's mean image"
    return f"a blurred copy of the image (Gaussian, sigma {settings.blur_sigma:g} px)"


def make_inputs(
    images: np.ndarray, background: np.ndarray, classes: np.ndarray, n_classes: int, settings: AssessConfig, seed: int
) -> AssessInputs:
    """The inputs every assessment of one arm shares; ``classes`` are the explained classes."""
    classes = np.asarray(classes, dtype=np.int64)
    rng = np.random.default_rng([seed, 7])
    other = (classes + rng.integers(1, n_classes, size=len(classes))) % n_classes  # never the explained class
    fill = mean_image(background)
    if insertion_baseline(settings, images.shape[1]) == "mean":
        start = np.broadcast_to(fill, images.shape).copy()
    else:
        start = blurred(images, settings.blur_sigma)
    return AssessInputs(
        images,
        background,
        classes,
        other,
        sanity_positions(len(images), settings.n_sanity),
        fill,
        start,
        fractions(settings.steps),
    )


def _correlation(a: np.ndarray, b: np.ndarray, *, absolute: bool) -> np.ndarray:
    """Per-image Spearman rho of two (N, H, W) maps, leaving out pixels zero in both."""
    return rank_correlation(a, b, absolute=absolute, mask=nonzero_mask(a, b))


def _curves(arm: Arm, inputs: AssessInputs, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (N, S) of the explained classes for pixel ``orders``."""
    common = dict(classes=inputs.classes, fractions=inputs.fractions)
    deletion = perturbation_curves(arm.predict_proba, inputs.images, inputs.fill, orders, mode="deletion", **common)
    insertion = perturbation_curves(
        arm.predict_proba, inputs.images, inputs.insertion_start, orders, mode="insertion", **common
    )
    return deletion, insertion


def assess_random(arm: Arm, inputs: AssessInputs, settings: AssessConfig, seed: int) -> dict[str, np.ndarray]:
    """The random-order baseline: deletion and insertion curves (R, N, S) for R seeded orders."""
    start = time.perf_counter()
    n, h, w, _ = inputs.images.shape
    deletion, insertion = [], []
    for r in range(settings.random_orders):
        d, i = _curves(arm, inputs, random_orders(n, h * w, seed + 1 + r))
        deletion.append(d)
        insertion.append(i)
    return {
        "deletion": np.stack(deletion),
        "insertion": np.stack(insertion),
        "fractions": inputs.fractions,
        "classes": inputs.classes,
        "seconds": np.array(time.perf_counter() - start),
    }


@dataclass
class _Maps:
    """One arm x method's channel-summed maps, as the explain stage computed them or explained here."""

    arm: Arm
    method: str
    explanation: Explanation | None  # the explain stage's maps; None: a method it did not run
    inputs: AssessInputs
    nsamples: int
    seed: int
    output: str

    def explain(self, model: Arm, rows: np.ndarray, classes: np.ndarray, seed: int | None = None) -> np.ndarray:
        """(M, H, W): ``model``'s maps of images[rows] at ``classes``, drawn with ``seed`` (default: the stage's)."""
        x, bg = self.inputs.images[rows], self.inputs.background
        e = model.explain(
            x,
            bg,
            self.method,
            nsamples=self.nsamples,
            seed=self.seed if seed is None else seed,
            output=self.output,
            classes=classes,
        )
        return channel_sum(e.attributions[:, 0], np.float64)

    def at(self, classes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(M, H, W): the maps of images[rows] at ``classes``, the explain stage's where it explained
        them, else explained here (a sampled method draws the same samples per image)."""
        if self.explanation is not None:
            hit = self.explanation.explained_classes[rows] == classes[:, None]  # (M, K')
            if hit.any(axis=1).all():
                return channel_sum(self.explanation.attributions[rows, hit.argmax(axis=1)], np.float64)
        return self.explain(self.arm, rows, classes)


def assess_method(
    arm: Arm,
    method: str,
    explanation: Explanation | None,
    inputs: AssessInputs,
    settings: AssessConfig,
    *,
    nsamples: int,
    seed: int,
    output: str,
    randomised: Mapping[str, Callable[[], AbstractContextManager[Arm]]],
) -> dict[str, np.ndarray]:
    """Every measure of one arm x method, per image (see the module's docstring).

    Args:
        explanation: the explain stage's maps (every class), or None for a method the
            explain stage did not run (a baseline method): then it is explained here.
        randomised: scope -> a ``with`` block giving the arm with that scope's weights
            re-drawn (:meth:`common.arm.Arm.randomized`, e.g. ``partial(arm.randomized, scope, seed)``).
    """
    start = time.perf_counter()
    source = _Maps(arm, method, explanation, inputs, nsamples, seed, output)
    maps = source.at(inputs.classes, np.arange(len(inputs.images)))  # (N, H, W)
    result: dict[str, np.ndarray] = {
        "classes": inputs.classes,
        "other_classes": inputs.other_classes,
        "sanity": inputs.sanity,
    }
    result["deletion"], result["insertion"] = _curves(arm, inputs, rank_pixels(maps))
    result["sparseness"] = gini(np.abs(maps))
    reference = _reference(source, maps)
    result.update(_sanity_checks(source, maps, reference, randomised))
    if settings.cross_check and arm.independent_library is not None:
        result.update(_cross_check(source, reference))
    result["seconds"] = np.array(time.perf_counter() - start)
    return result


def _reference(source: _Maps, maps: np.ndarray) -> np.ndarray:
    """The sanity subset's maps the randomised models are compared with: the explain stage's,
    or for a sampled method drawn again with seed + 1 (against the stage's maps that is the
    noise floor of two seeds, and the randomised models are explained with the same draws)."""
    sub = source.inputs.sanity
    if not method_spec(source.method).sampled:
        return maps[sub]
    return source.explain(source.arm, sub, source.inputs.classes[sub], source.seed + 1)


def _sanity_checks(
    source: _Maps,
    maps: np.ndarray,
    reference: np.ndarray,
    randomised: Mapping[str, Callable[[], AbstractContextManager[Arm]]],
) -> dict[str, np.ndarray]:
    """Random logit, noise floor and model randomisation, per image of the sanity subset;
    ``reference``: :func:`_reference`."""
    inputs, sub = source.inputs, source.inputs.sanity
    other = source.at(inputs.other_classes[sub], sub)  # the random logit
    out = {
        "random_logit_signed": _correlation(maps[sub], other, absolute=False),
        "random_logit_abs": _correlation(maps[sub], other, absolute=True),
    }
    sampled = method_spec(source.method).sampled
    draw = source.seed + 1 if sampled else source.seed
    if sampled:
        out["noise_floor"] = _correlation(maps[sub], reference, absolute=False)
    for scope, randomise in randomised.items():
        with randomise() as model:
            random_maps = source.explain(model, sub, inputs.classes[sub], draw)
        out[f"randomisation_{scope}_abs"] = _correlation(reference, random_maps, absolute=True)
        out[f"randomisation_{scope}_signed"] = _correlation(reference, random_maps, absolute=False)
    return out


def _cross_check(source: _Maps, ours: np.ndarray) -> dict[str, np.ndarray]:
    """The same estimator from the arm's independent library on the sanity subset (logits only),
    against ``ours`` (:func:`_reference`: Deep SHAP the explain stage's maps, a sampled method
    the draw with seed + 1)."""
    arm, inputs, sub = source.arm, source.inputs, source.inputs.sanity
    independent = arm.explain_independently(
        inputs.images[sub],
        inputs.background,
        source.method,
        nsamples=source.nsamples,
        seed=source.seed,
        classes=inputs.classes[sub],
    )
    if independent is None or source.output != "logits":
        return {}
    theirs = channel_sum(independent.attributions[:, 0], np.float64)
    scale = np.abs(ours).reshape(len(sub), -1).max(axis=1)
    diff = np.abs(theirs - ours).reshape(len(sub), -1).max(axis=1)
    return {
        "cross_max_relative_difference": np.where(scale > 0, diff / np.where(scale > 0, scale, 1), diff),
        "cross_rho": _correlation(ours, theirs, absolute=False),
        "cross_library": np.array(arm.independent_library),
    }


class ArmAssessment:
    """The assess stage's steps for one trained arm (``assess_random``, ``assess_<method>``), run
    by :class:`experiments.arm_stages.ArmStages` in the arm's process."""

    def __init__(
        self, arm: Callable[[], Arm], images: np.ndarray, background: np.ndarray, cfg: StudyConfig, paths: ArmPaths
    ):
        self._arm, self.images, self.background, self.cfg, self.paths = arm, images, background, cfg, paths

    def action(self, what: str) -> Callable[[], None]:
        """The step that writes ``assess_<what>.npz``: "random", or a method."""
        return self.random if what == "random" else partial(self.method, what)

    @cached_property
    def inputs(self) -> AssessInputs:
        """The explained images, background, classes and baselines every assessment shares."""
        arm = self._arm()
        classes = arm.predict_proba(self.images).argmax(1)  # the explained class: the prediction
        return make_inputs(self.images, self.background, classes, arm.n_classes, self.cfg.assess, self.cfg.seed)

    def random(self) -> None:
        result = assess_random(self._arm(), self.inputs, self.cfg.assess, self.cfg.seed)
        write_npz_atomic(self.paths.assessment("random"), **result)

    def method(self, method: str) -> None:
        arm, explain = self._arm(), self.cfg.explain
        explanation = Explanation.load(self.paths.attributions(method)) if method in explain.methods else None
        randomised = {scope: partial(arm.randomized, scope, self.cfg.seed) for scope in self.cfg.assess.randomise}
        result = assess_method(
            arm,
            method,
            explanation,
            self.inputs,
            self.cfg.assess,
            nsamples=explain.nsamples,
            seed=self.cfg.seed,
            output=explain.output,
            randomised=randomised,
        )
        write_npz_atomic(self.paths.assessment(method), **result)
