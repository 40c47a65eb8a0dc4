"""The assess stage: how faithful each model's maps are, and whether they pass sanity checks.

Implemented once, on the arm interface (uint8 images in, class probabilities and maps
out), so every arm is measured by the same code with the same perturbations, the same
pixels and the same random draws. For every model x method, on the explained images,
with the model's predicted class as the explained class:

1. **Deletion and insertion curves** (Petsiuk et al. 2018): pixels ranked by the
   channel-summed map are removed (replaced by the background set's mean image) or
   inserted into a baseline image (the mean image, or a blurred copy) in ``steps`` equal
   steps; the probability of the explained class is recorded at each step. The same
   images under ``random_orders`` random pixel orders are the baseline every map must beat
   (computed once per model: :func:`assess_random`).
2. **Model randomisation** (Adebayo et al. 2018): the learned weights in each scope are
   re-drawn by one rule (:func:`common.quality.randomize_weights`) and the same images are
   explained again; the Spearman correlation of |map| (and of the signed map) between the
   trained and the randomised model is recorded.
3. **Random logit** (Sixt et al. 2020): the map of the explained class against the map of
   another class (drawn at random, seeded) on the same image.
4. **Sparseness**: the Gini index of |map| (Hurley & Rickard 2009).
5. **Noise floor** of a sampled method: two seeds' maps of the same model.
6. **Independent cross-check**: the same estimator from an independent library where the
   arm has one (Captum for PyTorch).

Rank correlations leave out pixels that are zero in both maps compared (padding, or
pixels equal to the background everywhere), which would otherwise count as agreement.
Randomisation, random logit, noise floor and cross-check run on ``n_sanity`` of the explained images
(spread over the selection) to bound their cost; the report says how many.

:func:`assess_random` and :func:`assess_method` run in the arm's process and return
per-image arrays (saved as ``<arm>/assess_<method>.npz``); :func:`summarise_arm` turns them
into :class:`common.results.ArmQuality` in the evaluate stage, and :func:`findings` into
plain sentences for the report.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from common import quality as q
from common.arm import Arm, Explanation
from common.config import AssessConfig
from common.registry import RANDOMISATION_SCOPES, map_title, method_spec
from common.results import (
    ArmQuality,
    CrossLibrary,
    Estimate,
    MethodQuality,
    PairTest,
    RandomBaseline,
    Randomisation,
)

# A check fails when the mean rank correlation stays above this: the map barely changed
# although the model (randomisation) or the explained class (random logit) did.
SANITY_THRESHOLD = 0.5
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
    if insertion_baseline(settings, image_size) == "mean":
        return "the background set's mean image"
    return f"a blurred copy of the image (Gaussian, sigma {settings.blur_sigma:g} px)"


def sanity_positions(n: int, n_sanity: int | None) -> np.ndarray:
    """``n_sanity`` positions spread evenly over ``n`` explained images (all for None)."""
    if n_sanity is None or n_sanity >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, n_sanity).round().astype(np.int64))


def make_inputs(
    images: np.ndarray, background: np.ndarray, classes: np.ndarray, n_classes: int, settings: AssessConfig, seed: int
) -> AssessInputs:
    classes = np.asarray(classes, dtype=np.int64)
    rng = np.random.default_rng([seed, 7])
    other = (classes + rng.integers(1, n_classes, size=len(classes))) % n_classes  # never the explained class
    fill = q.mean_image(background)
    if insertion_baseline(settings, images.shape[1]) == "mean":
        start = np.broadcast_to(fill, images.shape).copy()
    else:
        start = q.blurred(images, settings.blur_sigma)
    return AssessInputs(
        images,
        background,
        classes,
        other,
        sanity_positions(len(images), settings.n_sanity),
        fill,
        start,
        q.fractions(settings.steps),
    )


def channel_maps(attributions: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H, W): the channel-summed map the study ranks and compares."""
    return np.asarray(attributions, dtype=np.float64).sum(axis=-1)


def _correlation(a: np.ndarray, b: np.ndarray, *, absolute: bool) -> np.ndarray:
    """Per-image Spearman rho of two (N, H, W) maps, leaving out pixels zero in both."""
    return q.rank_correlation(a, b, absolute=absolute, mask=q.nonzero_mask(a, b))


def _curves(arm: Arm, inputs: AssessInputs, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    deletion = q.perturbation_curves(
        arm.predict_proba, inputs.images, inputs.fill, orders, inputs.classes, inputs.fractions, mode="deletion"
    )
    insertion = q.perturbation_curves(
        arm.predict_proba,
        inputs.images,
        inputs.insertion_start,
        orders,
        inputs.classes,
        inputs.fractions,
        mode="insertion",
    )
    return deletion, insertion


def assess_random(arm: Arm, inputs: AssessInputs, settings: AssessConfig, seed: int) -> dict[str, np.ndarray]:
    """The random-order baseline: deletion and insertion curves (R, N, S) for R seeded orders."""
    start = time.perf_counter()
    n, h, w, _ = inputs.images.shape
    deletion, insertion = [], []
    for r in range(settings.random_orders):
        d, i = _curves(arm, inputs, q.random_orders(n, h * w, seed + 1 + r))
        deletion.append(d)
        insertion.append(i)
    return {
        "deletion": np.stack(deletion),
        "insertion": np.stack(insertion),
        "fractions": inputs.fractions,
        "classes": inputs.classes,
        "seconds": np.array(time.perf_counter() - start),
    }


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
    spec = method_spec(method)
    images, bg, classes, sub = inputs.images, inputs.background, inputs.classes, inputs.sanity

    def explain(model: Arm, x: np.ndarray, cls: np.ndarray, s: int = seed) -> np.ndarray:
        e = model.explain(x, bg, method, nsamples=nsamples, seed=s, output=output, classes=cls)
        return channel_maps(e.attributions[:, 0])

    def maps_at(cls: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The maps of images[rows] at classes ``cls``: the explain stage's where it explained
        them, else explained here (a sampled method draws the same samples per image)."""
        if explanation is not None:
            hit = explanation.explained_classes[rows] == cls[:, None]  # (M, K')
            if hit.any(axis=1).all():
                return channel_maps(explanation.attributions[rows, hit.argmax(axis=1)])
        return explain(arm, images[rows], cls)

    everything = np.arange(len(images))
    maps = maps_at(classes, everything)  # (N, H, W)
    result: dict[str, np.ndarray] = {"classes": classes, "other_classes": inputs.other_classes, "sanity": sub}
    result["deletion"], result["insertion"] = _curves(arm, inputs, q.rank_pixels(maps))
    result["sparseness"] = q.gini(np.abs(maps))
    other = maps_at(inputs.other_classes[sub], sub)  # the random logit, on the sanity subset
    result["random_logit_signed"] = _correlation(maps[sub], other, absolute=False)
    result["random_logit_abs"] = _correlation(maps[sub], other, absolute=True)

    # The sanity subset. A sampled method's maps are drawn again with seed + 1, one class per
    # image: against the explain stage's maps (seed) that is the noise floor of two seeds, and
    # the randomised models are explained with the same draws, so only the model differs.
    draw = seed + 1 if spec.sampled else seed
    reference = explain(arm, images[sub], classes[sub], draw) if spec.sampled else maps[sub]
    if spec.sampled:
        result["noise_floor"] = _correlation(maps[sub], reference, absolute=False)
    for scope, randomise in randomised.items():
        with randomise() as model:
            random_maps = explain(model, images[sub], classes[sub], draw)
        result[f"randomisation_{scope}_abs"] = _correlation(reference, random_maps, absolute=True)
        result[f"randomisation_{scope}_signed"] = _correlation(reference, random_maps, absolute=False)
    if settings.cross_check and arm.independent_library is not None:
        independent = arm.explain_independently(
            images[sub], bg, method, nsamples=nsamples, seed=seed, classes=classes[sub]
        )
        if independent is not None and output == "logits":
            theirs = channel_maps(independent.attributions[:, 0])
            ours_full = reference  # Deep SHAP: the explain stage's maps; sampled: drawn with seed + 1 above
            scale = np.abs(ours_full).reshape(len(sub), -1).max(axis=1)
            diff = np.abs(theirs - ours_full).reshape(len(sub), -1).max(axis=1)
            result["cross_max_relative_difference"] = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), diff)
            result["cross_rho"] = _correlation(ours_full, theirs, absolute=False)
            result["cross_library"] = np.array(arm.independent_library)
    result["seconds"] = np.array(time.perf_counter() - start)
    return result


# ----------------------------------------------------------------------------- summaries (evaluate stage)


def estimate(values: np.ndarray) -> Estimate:
    mean, low, high = q.mean_ci(values)
    return Estimate(mean=mean, ci95=[low, high], n=int(np.isfinite(np.asarray(values, np.float64)).sum()))


def summarise_arm(
    random: Mapping[str, np.ndarray], methods: Mapping[str, Mapping[str, np.ndarray]], n_classes: int
) -> ArmQuality:
    """One arm's :class:`ArmQuality` from :func:`assess_random`'s and :func:`assess_method`'s arrays."""
    fr = np.asarray(random["fractions"])
    chance = 1.0 / n_classes
    rand_del = q.curve_auc(fr, random["deletion"].reshape(-1, len(fr))).reshape(random["deletion"].shape[:2]).mean(0)
    rand_ins = q.curve_auc(fr, random["insertion"].reshape(-1, len(fr))).reshape(random["insertion"].shape[:2]).mean(0)
    chance_fracs = np.stack([q.fraction_at(fr, c, chance) for c in random["deletion"]])  # (R, N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an image no random order brings to chance: NaN
        rand_chance = np.nanmean(chance_fracs, axis=0)
    baseline = RandomBaseline(
        n_orders=int(random["deletion"].shape[0]),
        deletion_auc=estimate(rand_del),
        insertion_auc=estimate(rand_ins),
        deletion_chance_fraction=estimate(rand_chance),
        deletion_curve=random["deletion"].mean(axis=(0, 1)).tolist(),
        insertion_curve=random["insertion"].mean(axis=(0, 1)).tolist(),
    )
    per_image: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out: dict[str, MethodQuality] = {}
    for method, r in methods.items():
        d_auc, i_auc = q.curve_auc(fr, r["deletion"]), q.curve_auc(fr, r["insertion"])
        per_image[method] = (d_auc, i_auc)
        randomisation = {
            scope: Randomisation(
                abs_rho=estimate(r[f"randomisation_{scope}_abs"]),
                signed_rho=estimate(r[f"randomisation_{scope}_signed"]),
            )
            for scope in RANDOMISATION_SCOPES
            if f"randomisation_{scope}_abs" in r
        }
        cross = None
        if "cross_library" in r:
            cross = CrossLibrary(
                library=str(r["cross_library"]),
                max_relative_difference=float(np.max(r["cross_max_relative_difference"])),
                rho=estimate(r["cross_rho"]),
            )
        out[method] = MethodQuality(
            n_images=int(len(r["classes"])),
            n_sanity=int(len(r["sanity"])),
            deletion_auc=estimate(d_auc),
            insertion_auc=estimate(i_auc),
            deletion_p_vs_random=q.paired_p(d_auc, rand_del),
            insertion_p_vs_random=q.paired_p(i_auc, rand_ins),
            deletion_chance_fraction=estimate(q.fraction_at(fr, r["deletion"], chance)),
            sparseness=estimate(r["sparseness"]),
            random_logit_rho=estimate(r["random_logit_signed"]),
            random_logit_abs_rho=estimate(r["random_logit_abs"]),
            randomisation=randomisation,
            noise_floor_rho=estimate(r["noise_floor"]) if "noise_floor" in r else None,
            cross_library=cross,
            deletion_curve=np.mean(r["deletion"], axis=0).tolist(),
            insertion_curve=np.mean(r["insertion"], axis=0).tolist(),
            seconds=float(r["seconds"]),
        )
    tests = {}
    names = list(per_image)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            tests[f"{a}~{b}"] = PairTest(
                deletion_p=q.paired_p(per_image[a][0], per_image[b][0]),
                insertion_p=q.paired_p(per_image[a][1], per_image[b][1]),
            )
    return ArmQuality(
        fractions=fr.tolist(),
        chance=chance,
        random=baseline,
        methods=out,
        method_tests=tests,
        seconds=float(random["seconds"]) + sum(m.seconds for m in out.values()),
    )


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    return "p n/a" if p is None else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def findings(quality: Mapping[str, ArmQuality], arm_keys: Mapping[str, str], titles: Mapping[str, str]) -> list[str]:
    """Plain sentences generated from the numbers: which maps are more faithful, which fail a check.

    Args:
        quality: arm name -> its quality.
        arm_keys: arm name -> arm key (for map titles).
        titles: arm name -> the model's title.
    """
    lines = []
    for name, aq in quality.items():
        key, title = arm_keys[name], titles[name]
        ms = aq.methods
        if not ms:
            continue
        by_del = sorted(ms, key=lambda m: np.inf if ms[m].deletion_auc.mean is None else ms[m].deletion_auc.mean)
        by_ins = sorted(ms, key=lambda m: -np.inf if ms[m].insertion_auc.mean is None else -ms[m].insertion_auc.mean)
        best_d, best_i = by_del[0], by_ins[0]
        text = (
            f"{title}: by deletion the most faithful map is {map_title(key, best_d)} "
            f"(AUC {_f(ms[best_d].deletion_auc.mean)}; random order {_f(aq.random.deletion_auc.mean)})"
        )
        if len(by_del) > 1:
            second = by_del[1]
            test = aq.method_tests.get(f"{best_d}~{second}") or aq.method_tests.get(f"{second}~{best_d}")
            p_del = _p(test.deletion_p if test else None)
            text += f", ahead of {map_title(key, second)} ({_f(ms[second].deletion_auc.mean)}, {p_del})"
        ins, rand_ins = _f(ms[best_i].insertion_auc.mean), _f(aq.random.insertion_auc.mean)
        text += f"; by insertion it is {map_title(key, best_i)} (AUC {ins}; random {rand_ins})."
        lines.append(text)
        not_beating = [
            m
            for m, mq in ms.items()
            if not (
                mq.deletion_auc.mean is not None
                and aq.random.deletion_auc.mean is not None
                and mq.deletion_auc.mean < aq.random.deletion_auc.mean
                and mq.deletion_p_vs_random is not None
                and mq.deletion_p_vs_random < 0.05
            )
        ]
        if not_beating:
            lines.append(
                f"{title}: {', '.join(map_title(key, m) for m in not_beating)} did not remove the score "
                "significantly faster than a random pixel order (deletion, Wilcoxon p < 0.05 not reached)."
            )
        else:
            lines.append(f"{title}: every map removes the score significantly faster than a random pixel order.")
        for m, mq in ms.items():
            for scope, r in mq.randomisation.items():
                if r.abs_rho.mean is not None and r.abs_rho.mean > SANITY_THRESHOLD:
                    lines.append(
                        f"{map_title(key, m)} fails the model-randomisation check ({scope}: "
                        f"{RANDOMISATION_SCOPES[scope]}): its |map| keeps Spearman {_f(r.abs_rho.mean)} with the "
                        f"randomised model's (signed map {_f(r.signed_rho.mean)}), so it reflects the image more "
                        "than what the model learned."
                    )
            if mq.random_logit_rho.mean is not None and mq.random_logit_rho.mean > SANITY_THRESHOLD:
                lines.append(
                    f"{map_title(key, m)} fails the random-logit check: the map of another class correlates at "
                    f"{_f(mq.random_logit_rho.mean)} with the explained class's, so it hardly depends on the class."
                )
            if mq.cross_library is not None:
                c = mq.cross_library
                noise = f"; two shap seeds agree at {_f(mq.noise_floor_rho.mean)}" if mq.noise_floor_rho else ""
                lines.append(
                    f"{map_title(key, m)} vs {c.library}: largest relative difference {c.max_relative_difference:.1e}, "
                    f"Spearman {_f(c.rho.mean, 3)}{noise}."
                )
    failed = [line for line in lines if " fails " in line]
    if quality and not failed:
        lines.append(
            f"No map fails a sanity check (randomisation and random-logit correlations at most {SANITY_THRESHOLD})."
        )
    return lines
