"""The assess stage, in the arm's process: how faithful each model's maps are, and whether they pass sanity checks.

Implemented once, on the arm interface (uint8 images in, class probabilities and maps out), so
every arm is measured by the same code with the same perturbations, the same pixels and the
same random draws. What it runs is chosen within the study's budget (:mod:`experiments.budget`).
For every model x method, on the explained images, with the model's predicted class as the
explained class:

1. **Deletion and insertion curves** (Petsiuk et al. 2018): pixels ranked by the channel-summed
   map are removed (replaced by the background set's mean image) or inserted into a baseline
   image (the mean image, or a blurred copy) in ``steps`` steps (log-spaced by default: dense
   where the curves move); the probability of the explained class is recorded at each step.
   The same images under random pixel orders are the baseline every map must beat
   (:func:`assess_random`).
2. **Model randomisation** (Adebayo et al. 2018), as a cascade: the learned weights of the head,
   then of the whole model, re-drawn by one rule
   (:func:`common.quality.randomisation.randomize_weights`); the same images are explained again
   and the trained and randomised maps compared (Spearman of the signed map, which decides, and
   of |map|, and SSIM).
3. **Random logit** (Sixt et al. 2020): the map of the explained class against the map of
   another class (drawn at random, seeded) on the same image.
4. **Sparseness**: the Gini index of |map| (Hurley & Rickard 2009).
5. **Second draws** of a sampled method: on the sanity images at the explained class (the
   randomised models are explained with the same draws; its agreement with the explain stage's
   draw is the noise floor), and on the ceiling images at the true class (each map's agreement
   with itself, the reliability behind the agreement's ceiling; and the Monte Carlo error of
   the maps' sums, against which their additivity is read).
6. **Independent cross-check**: the same estimator from an independent library where the arm
   has one (Captum for PyTorch), beside the same statistic between two draws of shap.
7. **Maps at the true class** of every explained image, for the comparison of models at a
   shared class (explained here where the explain stage did not).

Rank correlations leave out pixels that are zero in both maps compared. The null that the
sanity checks' figures are read against depends on the images alone and is computed by the
evaluate stage (:func:`common.quality.randomisation.input_only_maps`).

:func:`assess_random` and :func:`assess_method` return per-image arrays, saved as
``<arm>/assess_<what>.npz`` by :class:`ArmAssessment`; the evaluate stage summarises them
(:mod:`experiments.evaluate_quality`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property, partial

import numpy as np

from common.arm import Arm
from common.config import AssessConfig, StudyConfig
from common.explanation import Explanation, channel_sum
from common.io import write_npz_atomic
from common.quality.agreement import nonzero_mask, rank_correlation, structural_similarity
from common.quality.complexity import gini
from common.quality.faithfulness import (
    blurred,
    fractions,
    mean_image,
    perturbation_curves,
    random_orders,
    rank_pixels,
)
from common.registry import ArmSpec, method_spec
from experiments.budget import AssessPlan, allocate
from experiments.layout import ArmPaths, sanity_positions

# "auto" insertion baseline: the mean image below this size (a blur leaves small digits readable)
MEAN_INSERTION_BELOW = 64


@dataclass(frozen=True)
class AssessInputs:
    """What every assessment of one arm shares: the images, the baselines and the classes."""

    images: np.ndarray  # uint8 (N, H, W, C): the explained images
    background: np.ndarray  # uint8 (B, H, W, C)
    classes: np.ndarray  # int (N,): the explained class (the trained model's prediction)
    true_classes: np.ndarray  # int (N,): the images' true classes (the class every model shares)
    other_classes: np.ndarray  # int (N,): another class per image, for the random-logit check
    sanity: np.ndarray  # int (M,): positions (in images) of the sanity checks and the cross-check
    ceiling: np.ndarray  # int (L,): positions of the second draws at the true class
    fill: np.ndarray  # uint8 (H, W, C): what deletion puts in (the background's mean image)
    insertion_start: np.ndarray  # uint8 (N, H, W, C): what insertion starts from
    fractions: np.ndarray  # (S,)
    random_orders: int  # random pixel orders per image


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
    images: np.ndarray,
    background: np.ndarray,
    classes: np.ndarray,
    true_classes: np.ndarray,
    n_classes: int,
    settings: AssessConfig,
    plan: AssessPlan,
    seed: int,
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
    n, h, w = images.shape[:3]
    return AssessInputs(
        images,
        background,
        classes,
        np.asarray(true_classes, dtype=np.int64),
        other,
        sanity_positions(n, plan.n_sanity),
        sanity_positions(n, plan.n_ceiling),
        fill,
        start,
        fractions(plan.steps, settings.spacing, h * w),
        plan.random_orders,
    )


def _similarities(a: np.ndarray, b: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """Per image, of two (M, H, W) maps: Spearman of the signed maps (``<name>_signed``, leaving
    out pixels zero in both), of |map| (``<name>_abs``) and SSIM (``<name>_ssim``)."""
    mask = nonzero_mask(a, b)
    return {
        f"{name}_signed": rank_correlation(a, b, mask=mask),
        f"{name}_abs": rank_correlation(a, b, absolute=True, mask=mask),
        f"{name}_ssim": structural_similarity(a, b),
    }


def _curves(arm: Arm, inputs: AssessInputs, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (N, S) of the explained classes for pixel ``orders``."""
    common = dict(classes=inputs.classes, fractions=inputs.fractions, batch_size=256)
    deletion = perturbation_curves(arm.predict_proba, inputs.images, inputs.fill, orders, mode="deletion", **common)
    insertion = perturbation_curves(
        arm.predict_proba, inputs.images, inputs.insertion_start, orders, mode="insertion", **common
    )
    return deletion, insertion


def assess_random(arm: Arm, inputs: AssessInputs, seed: int) -> dict[str, np.ndarray]:
    """The random-order baseline: deletion and insertion curves (R, N, S) for R seeded orders."""
    start = time.perf_counter()
    n, h, w, _ = inputs.images.shape
    deletion, insertion = [], []
    for r in range(inputs.random_orders):
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
    drawn: dict = field(default_factory=dict)  # (row, class, seed) -> map explained here, reused

    def explain(self, model: Arm, rows: np.ndarray, classes: np.ndarray, seed: int | None = None) -> np.ndarray:
        """(M, H, W): ``model``'s maps of images[rows] at ``classes``, drawn with ``seed`` (default: the stage's)."""
        x, bg = self.inputs.images[rows], self.inputs.background
        seed = self.seed if seed is None else seed
        e = model.explain(x, bg, self.method, nsamples=self.nsamples, seed=seed, output=self.output, classes=classes)
        return channel_sum(e.attributions[:, 0], np.float64)

    def at(self, classes: np.ndarray, rows: np.ndarray, seed: int | None = None) -> np.ndarray:
        """(M, H, W): the trained model's maps of images[rows] at ``classes``: the explain stage's
        where it explained them (with the stage's seed), else explained here once and kept (a
        sampled method draws the same samples for an image, whichever images come with it)."""
        seed = self.seed if seed is None else seed
        out = np.empty((len(rows), *self.inputs.images.shape[1:3]))
        missing = []
        for j, (row, c) in enumerate(zip(rows.tolist(), np.asarray(classes).tolist(), strict=True)):
            stored = self._stored(row, c) if seed == self.seed else None
            if stored is None:
                stored = self.drawn.get((row, c, seed))
            if stored is None:
                missing.append(j)
            else:
                out[j] = stored
        if missing:
            new = self.explain(self.arm, rows[missing], np.asarray(classes)[missing], seed)
            for j, m in zip(missing, new, strict=True):
                self.drawn[(int(rows[j]), int(np.asarray(classes)[j]), seed)] = m
                out[j] = m
        return out

    def _stored(self, row: int, c: int) -> np.ndarray | None:
        if self.explanation is None:
            return None
        hit = np.flatnonzero(self.explanation.explained_classes[row] == c)
        return channel_sum(self.explanation.attributions[row, hit[0]], np.float64) if len(hit) else None

    def additivity_gaps(self, classes: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """Each map's f(x) - E[f(background)] at its class, from the explain stage's outputs and
        base values (what its additivity is measured against); None without an explain stage."""
        if self.explanation is None:
            return None
        e = self.explanation
        return e.outputs[rows, classes].astype(np.float64) - e.base_values[classes].astype(np.float64)


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
        explanation: the explain stage's maps, or None for a method the explain stage did not
            run (a baseline method): then it is explained here.
        randomised: scope -> a ``with`` block giving the arm with that scope's weights re-drawn
            (:meth:`common.arm.Arm.randomized`), in cascade order.
    """
    start = time.perf_counter()
    source = _Maps(arm, method, explanation, inputs, nsamples, seed, output)
    everything = np.arange(len(inputs.images))
    maps = source.at(inputs.classes, everything)  # (N, H, W)
    result: dict[str, np.ndarray] = {
        "classes": inputs.classes,
        "true_classes": inputs.true_classes,
        "other_classes": inputs.other_classes,
        "sanity": inputs.sanity,
        "ceiling": inputs.ceiling,
    }
    result["deletion"], result["insertion"] = _curves(arm, inputs, rank_pixels(maps))
    result["sparseness"] = gini(np.abs(maps))
    result["true_maps"] = source.at(inputs.true_classes, everything).astype(np.float32)
    reference = _reference(source, maps)
    result.update(_sanity_checks(source, maps, reference, randomised))
    if method_spec(method).sampled:
        result.update(_second_draws(source, result["true_maps"]))
    if settings.cross_check and arm.independent_library is not None:
        result.update(_cross_check(source, maps, reference))
    result["seconds"] = np.array(time.perf_counter() - start)
    return result


def _reference(source: _Maps, maps: np.ndarray) -> np.ndarray:
    """The sanity subset's maps the randomised models are compared with: the explain stage's, or
    for a sampled method drawn again with seed + 1 (the randomised models are explained with the
    same draws, so only the model differs; against the stage's maps it is the noise floor)."""
    sub = source.inputs.sanity
    if not method_spec(source.method).sampled:
        return maps[sub]
    return source.at(source.inputs.classes[sub], sub, source.seed + 1)


def _sanity_checks(
    source: _Maps,
    maps: np.ndarray,
    reference: np.ndarray,
    randomised: Mapping[str, Callable[[], AbstractContextManager[Arm]]],
) -> dict[str, np.ndarray]:
    """The random logit and the randomisation cascade, per image of the sanity subset."""
    inputs, sub = source.inputs, source.inputs.sanity
    if not len(sub):
        return {}
    other = source.at(inputs.other_classes[sub], sub)  # the random logit
    out = _similarities(maps[sub], other, "random_logit")
    draw = source.seed + 1 if method_spec(source.method).sampled else source.seed
    for scope, randomise in randomised.items():
        with randomise() as model:
            random_maps = source.explain(model, sub, inputs.classes[sub], draw)
        out.update(_similarities(reference, random_maps, f"randomisation_{scope}"))
    return out


def _second_draws(source: _Maps, true_maps: np.ndarray) -> dict[str, np.ndarray]:
    """A sampled method drawn again (seed + 1) at the true class on the ceiling images: each map's
    agreement with itself, and the Monte Carlo error of its sum next to its additivity error."""
    inputs, rows = source.inputs, source.inputs.ceiling
    if not len(rows):
        return {}
    classes = inputs.true_classes[rows]
    first, second = true_maps[rows].astype(np.float64), source.at(classes, rows, source.seed + 1)
    out = {"ceiling_rho": rank_correlation(first, second, mask=nonzero_mask(first, second))}
    delta = source.additivity_gaps(classes, rows)
    if delta is not None:
        sums, second_sums = first.reshape(len(rows), -1).sum(axis=1), second.reshape(len(rows), -1).sum(axis=1)
        out["additivity_error"] = sums - delta  # the explain stage's draw
        out["draw_difference"] = sums - second_sums  # sqrt(2) x the Monte Carlo error of a sum, in expectation
        out["additivity_delta"] = delta
    return out


def _relative_difference(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per image, max |ours - theirs| over max |ours| (the absolute difference where ours is all zero)."""
    n = len(ours)
    scale = np.abs(ours).reshape(n, -1).max(axis=1)
    diff = np.abs(theirs - ours).reshape(n, -1).max(axis=1)
    return np.where(scale > 0, diff / np.where(scale > 0, scale, 1), diff)


def _cross_check(source: _Maps, maps: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """The same estimator from the arm's independent library on the sanity subset (logits only),
    against ``reference`` (:func:`_reference`), beside the same statistics between two draws of
    shap (the explain stage's and the reference; none for a deterministic method)."""
    arm, inputs, sub = source.arm, source.inputs, source.inputs.sanity
    if not len(sub) or source.output != "logits":
        return {}
    independent = arm.explain_independently(
        inputs.images[sub],
        inputs.background,
        source.method,
        nsamples=source.nsamples,
        seed=source.seed,
        classes=inputs.classes[sub],
    )
    if independent is None:
        return {}
    theirs = channel_sum(independent.attributions[:, 0], np.float64)
    out = {
        "cross_max_relative_difference": _relative_difference(reference, theirs),
        "cross_rho": rank_correlation(reference, theirs, mask=nonzero_mask(reference, theirs)),
        "cross_library": np.array(arm.independent_library),
    }
    if method_spec(source.method).sampled:
        ours = maps[sub]
        out["seed_max_relative_difference"] = _relative_difference(reference, ours)
        out["seed_rho"] = rank_correlation(reference, ours, mask=nonzero_mask(reference, ours))
    return out


class ArmAssessment:
    """The assess stage's steps for one trained arm (``assess_random``, ``assess_<method>``), run
    by :class:`experiments.arm_stages.ArmStages` in the arm's process."""

    def __init__(
        self,
        arm: Callable[[], Arm],
        images: np.ndarray,
        labels: np.ndarray,
        background: np.ndarray,
        cfg: StudyConfig,
        spec: ArmSpec,
        n_classes: int,
        paths: ArmPaths,
    ):
        self._arm, self.images, self.labels, self.background = arm, images, labels, background
        self.cfg, self.paths = cfg, paths
        self.plan = allocate(cfg, len(images), n_classes, images.shape[1])[spec.key]

    def action(self, what: str) -> Callable[[], None]:
        """The step that writes ``assess_<what>.npz``: "random", or a method."""
        return self.random if what == "random" else partial(self.method, what)

    @cached_property
    def inputs(self) -> AssessInputs:
        """The explained images, background, classes and baselines every assessment shares."""
        arm = self._arm()
        classes = arm.predict_proba(self.images).argmax(1)  # the explained class: the prediction
        a, seed = self.cfg.assess, self.cfg.seed
        return make_inputs(self.images, self.background, classes, self.labels, arm.n_classes, a, self.plan, seed)

    def random(self) -> None:
        result = assess_random(self._arm(), self.inputs, self.cfg.seed)
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
