"""The evaluate stage's attribution-quality figures: the assess stage's per-image arrays summarised
per model and method, tested with their verdicts (:mod:`common.verdicts`), with the settings and
the findings (metrics.json's ``quality``)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.config import StudyConfig, selected_arms
from common.data.dataset import StudyData
from common.quality.faithfulness import curve_auc, fraction_at
from common.quality.randomisation import input_only_similarity
from common.registry import RANDOMISATION_SCOPES, method_spec
from common.report.findings import findings
from common.results import (
    ArmQuality,
    ChanceFraction,
    CrossLibrary,
    MethodQuality,
    MonteCarlo,
    PairTest,
    QualitySummary,
    RandomBaseline,
    Randomisation,
    Similarity,
    Verdict,
)
from common.stats import estimate, paired_p
from common.verdicts import ALPHA, RULES, SANITY_THRESHOLD, Pending, decide, exact
from experiments.assess import insertion_baseline_text
from experiments.budget import PRIORITIES, allocate, family_size
from experiments.layout import ArmPaths, Selection, assessed_methods, unit_seed


def evaluate_quality(cfg: StudyConfig, out: Path, data: StudyData, selection: Selection) -> QualitySummary:
    """The attribution-quality figures from the assess stage's arrays, their verdicts and findings."""
    x_test, _ = data.arrays("test")
    x_train, _ = data.arrays("train")
    images = x_test[selection.explain_idx]
    null = input_only_similarity(images, x_train[selection.background_idx], cfg.seed)
    plans = allocate(cfg, len(images), len(data.classes), data.image_size)
    arms: dict[str, ArmQuality] = {}
    for spec in selected_arms(cfg):
        paths = ArmPaths.of(out, spec, unit_seed(cfg))
        with np.load(paths.assessment("random")) as z:
            random = {k: z[k] for k in z.files}
        methods = {}
        for method in assessed_methods(cfg):
            with np.load(paths.assessment(method)) as z:
                methods[method] = {k: z[k] for k in z.files}
        planned = family_size(cfg, spec)
        arms[spec.name] = summarise_arm(random, methods, len(data.classes), null, cfg.assess.randomise, planned)
        arms[spec.name].plan = dataclasses.asdict(plans[spec.key])
    names = {spec.name: spec.key for spec in selected_arms(cfg)}
    titles = {spec.name: spec.title for spec in selected_arms(cfg)}
    settings = _settings(cfg, data.image_size)
    return QualitySummary(settings=settings, arms=arms, findings=findings(arms, names, titles))


def _settings(cfg: StudyConfig, image_size: int) -> dict:
    a = cfg.assess
    return {
        "budget": f"{a.budget:.0%} of the explain stages' cost (multiply-adds) beyond the base (every method's "
        "curves and one random order on every explained image), spent in this order: "
        + "; ".join(f"{i}. {p}" for i, p in enumerate(PRIORITIES, 1)),
        "steps": f"{a.steps}, {a.spacing}-spaced",
        "random_orders": a.random_orders if a.random_orders is not None else "chosen by the budget, up to 10",
        "deletion_fill": "the background set's mean image",
        "insertion_baseline": insertion_baseline_text(a, image_size),
        "explained_class": "each model's predicted class",
        "n_sanity": a.n_sanity if a.n_sanity is not None else "chosen by the budget, up to every explained image",
        "randomised_scopes": {scope: RANDOMISATION_SCOPES[scope] for scope in a.randomise},
        "randomisation_rule": (
            "each learned tensor re-drawn from a normal distribution with its own mean and standard deviation "
            "(seeded); batch-norm running statistics and the fixed preprocessing are kept"
        ),
        "random_logit": "the explained class's map against a randomly drawn other class's (seeded)",
        "sanity_threshold": SANITY_THRESHOLD,
        "null": (
            "two smooth random fields times (x - mean background) on the same images (the part of every "
            "method's map that depends on the input alone), 4 pairs per image"
        ),
        "family": f"every test of an arm, Holm-corrected together at {ALPHA:g}",
        "cross_check": a.cross_check,
    }


def summarise_arm(
    random: Mapping[str, np.ndarray],
    methods: Mapping[str, Mapping[str, np.ndarray]],
    n_classes: int,
    null: Mapping[str, np.ndarray] | None = None,
    scopes: tuple[str, ...] = tuple(RANDOMISATION_SCOPES),
    planned: int | None = None,
) -> ArmQuality:
    """One arm's :class:`ArmQuality` from the arrays of :func:`experiments.assess.assess_random`
    and :func:`experiments.assess.assess_method` (one per method), with its verdicts; ``null``:
    :func:`common.quality.randomisation.input_only_similarity` of every explained image; ``scopes``:
    the randomisation cascade's (a method without sanity images gets "too few images" for each);
    ``planned``: the family's size when every check runs (:func:`experiments.budget.family_size`)."""
    fr = np.asarray(random["fractions"])
    chance = 1.0 / n_classes
    baseline, rand_del, rand_ins = _random_baseline(random, chance)
    aucs = {m: (curve_auc(fr, r["deletion"]), curve_auc(fr, r["insertion"])) for m, r in methods.items()}
    out = {m: _method_quality(r, fr, chance, rand_del, rand_ins, null) for m, r in methods.items()}
    tests: dict[str, Pending] = {}
    for m, r in methods.items():
        tests.update(_pending(m, r, aucs[m], rand_del, rand_ins, out[m]))
    pairs = [(a, b) for i, a in enumerate(aucs) for b in list(aucs)[i + 1 :]]
    for a, b in pairs:
        for j, mode in enumerate(("deletion", "insertion")):
            tests[f"{a}~{b} {mode}"] = Pending(mode, aucs[a][j] - aucs[b][j], 0.0, "below")
    verdicts, corrected, needed = decide(tests, planned)
    for m, mq in out.items():  # no sanity image: no statistic, and fewer images than a verdict needs
        for check in [f"randomisation_{s}" for s in scopes if s not in mq.randomisation] + ["random_logit"]:
            if f"{m} {check}" not in verdicts:
                mq.verdicts[check] = Verdict("too few images", 0, None, SANITY_THRESHOLD, None, None,
                                             RULES["sanity"], n_needed=needed)  # fmt: skip
    for name, verdict in verdicts.items():
        method, _, check = name.partition(" ")
        if method in out:
            out[method].verdicts[check] = verdict
            if check.startswith("randomisation_"):
                out[method].randomisation[check.removeprefix("randomisation_")].verdict = verdict
    for m, mq in out.items():
        mq.verdicts.update(_exact_verdicts(m, methods[m], mq))
    method_tests = {
        f"{a}~{b}": PairTest(
            deletion_p=paired_p(aucs[a][0], aucs[b][0]),
            insertion_p=paired_p(aucs[a][1], aucs[b][1]),
            deletion_p_holm=corrected[f"{a}~{b} deletion"],
            insertion_p_holm=corrected[f"{a}~{b} insertion"],
        )
        for a, b in pairs
    }
    return ArmQuality(
        fractions=fr.tolist(),
        chance=chance,
        random=baseline,
        methods=out,
        method_tests=method_tests,
        seconds=float(random["seconds"]) + sum(m.seconds for m in out.values()),
        family_size=sum(p is not None for p in corrected.values()),
        n_needed=needed,
        winners={mode: _winner(aucs, corrected, j, mode) for j, mode in enumerate(("deletion", "insertion"))},
        random_chance=_chance(random["deletion"], fr, chance),
    )


def _pending(
    m: str, r: Mapping[str, np.ndarray], auc: tuple, rand_del: np.ndarray, rand_ins: np.ndarray, mq: MethodQuality
) -> dict[str, Pending]:
    """One method's tests: faithfulness, the sanity cascade and random logit, and the consistency
    checks of a sampled method (its deterministic checks need no test)."""
    tests = {
        f"{m} deletion": Pending("deletion", auc[0] - rand_del, 0.0, "below"),
        f"{m} insertion": Pending("insertion", auc[1] - rand_ins, 0.0, "above"),
    }
    null_upper = mq.null.signed_rho.ci95[1] if mq.null is not None else None
    for scope in mq.randomisation:
        values = r[f"randomisation_{scope}_signed"]
        tests[f"{m} randomisation_{scope}"] = Pending("sanity", values, SANITY_THRESHOLD, "below", True, null_upper)
    if "random_logit_signed" in r:
        values = r["random_logit_signed"]
        tests[f"{m} random_logit"] = Pending("sanity", values, SANITY_THRESHOLD, "below", True, null_upper)
    if "seed_rho" in r:
        tests[f"{m} cross_library"] = Pending("cross_library", r["cross_rho"] - r["seed_rho"], 0.0, "above", False)
    if "draw_difference" in r:
        excess = r["additivity_error"] ** 2 - r["draw_difference"] ** 2 / 2  # E = 0 when only Monte Carlo error
        tests[f"{m} monte_carlo"] = Pending("monte_carlo", excess, 0.0, "below", False)
    return tests


def _exact_verdicts(m: str, r: Mapping[str, np.ndarray], mq: MethodQuality) -> dict:
    """A deterministic method's consistency: the cross-library difference (the assess stage's) and
    the additivity error (the explain stage's, in the explanation summary: see the evaluate stage)."""
    out = {}
    if method_spec(m).sampled:
        return out
    if mq.cross_library is not None:
        n = mq.cross_library.rho.n
        out["cross_library"] = exact("cross_library_exact", mq.cross_library.max_relative_difference, n)
    return out


def _winner(aucs: Mapping[str, tuple], corrected: Mapping[str, float | None], j: int, mode: str) -> str | None:
    """The method whose AUC (deletion: lowest; insertion: highest) beats every other method's
    significantly after Holm's correction, or None."""
    sign = 1 if mode == "deletion" else -1
    means = {m: sign * float(np.nanmean(a[j])) for m, a in aucs.items()}
    best = min(means, key=means.get)
    for other in aucs:
        if other == best:
            continue
        key = f"{best}~{other} {mode}" if f"{best}~{other} {mode}" in corrected else f"{other}~{best} {mode}"
        if corrected.get(key) is None or corrected[key] >= ALPHA:
            return None
    return best


def _chance(deletion: np.ndarray, fr: np.ndarray, chance: float) -> ChanceFraction:
    """The median over images of the fraction at which the score reaches chance (orders of a random
    baseline: each image's median over its orders); censored: never reached."""
    curves = deletion.reshape(-1, *deletion.shape[-2:])  # (R, N, S) or (1, N, S)
    per_order = np.stack([fraction_at(fr, c, chance) for c in curves])  # (R, N), NaN: never
    per_image = np.median(np.where(np.isnan(per_order), np.inf, per_order), axis=0)
    censored = int(np.isinf(per_image).sum())
    median = float(np.median(per_image)) if censored * 2 < len(per_image) else None
    return ChanceFraction(median=median, n=len(per_image), censored=censored)


def _random_baseline(random: Mapping[str, np.ndarray], chance: float) -> tuple[RandomBaseline, np.ndarray, np.ndarray]:
    """The random orders' summary, and per image their mean deletion and insertion AUCs (N,)."""
    fr = np.asarray(random["fractions"])
    rand_del = curve_auc(fr, random["deletion"].reshape(-1, len(fr))).reshape(random["deletion"].shape[:2]).mean(0)
    rand_ins = curve_auc(fr, random["insertion"].reshape(-1, len(fr))).reshape(random["insertion"].shape[:2]).mean(0)
    chance_fracs = np.stack([fraction_at(fr, c, chance) for c in random["deletion"]])  # (R, N)
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
    return baseline, rand_del, rand_ins


def _method_quality(
    r: Mapping[str, np.ndarray],
    fr: np.ndarray,
    chance: float,
    rand_del: np.ndarray,
    rand_ins: np.ndarray,
    null: Mapping[str, np.ndarray] | None,
) -> MethodQuality:
    """One method's figures from its assess arrays, against the random orders' AUCs per image."""
    d_auc, i_auc = curve_auc(fr, r["deletion"]), curve_auc(fr, r["insertion"])
    sanity = np.asarray(r["sanity"], dtype=np.int64)
    return MethodQuality(
        n_images=int(len(r["classes"])),
        n_sanity=int(len(sanity)),
        deletion_auc=estimate(d_auc),
        insertion_auc=estimate(i_auc),
        deletion_p_vs_random=paired_p(d_auc, rand_del),
        insertion_p_vs_random=paired_p(i_auc, rand_ins),
        deletion_chance_fraction=estimate(fraction_at(fr, r["deletion"], chance)),
        sparseness=estimate(r["sparseness"]),
        random_logit_rho=estimate(r.get("random_logit_signed", np.array([]))),
        random_logit_abs_rho=estimate(r.get("random_logit_abs", np.array([]))),
        randomisation=_randomisation(r),
        noise_floor_rho=estimate(r["seed_rho"]) if "seed_rho" in r else None,
        cross_library=_cross_library(r),
        deletion_curve=np.mean(r["deletion"], axis=0).tolist(),
        insertion_curve=np.mean(r["insertion"], axis=0).tolist(),
        seconds=float(r["seconds"]),
        deletion_effect=estimate(d_auc - rand_del),
        insertion_effect=estimate(i_auc - rand_ins),
        chance=_chance(r["deletion"][None], fr, chance),
        random_logit_ssim=estimate(r["random_logit_ssim"]) if "random_logit_ssim" in r else None,
        null=_null(null, sanity) if null is not None and len(sanity) else None,
        reliability=estimate(r["ceiling_rho"]) if "ceiling_rho" in r else None,
        monte_carlo=_monte_carlo(r),
    )


def _randomisation(r: Mapping[str, np.ndarray]) -> dict[str, Randomisation]:
    """Each randomised scope's similarities, in cascade order."""
    return {
        scope: Randomisation(
            abs_rho=estimate(r[f"randomisation_{scope}_abs"]),
            signed_rho=estimate(r[f"randomisation_{scope}_signed"]),
            ssim=estimate(r[f"randomisation_{scope}_ssim"]) if f"randomisation_{scope}_ssim" in r else None,
        )
        for scope in RANDOMISATION_SCOPES
        if f"randomisation_{scope}_abs" in r
    }


def _cross_library(r: Mapping[str, np.ndarray]) -> CrossLibrary | None:
    if "cross_library" not in r:
        return None
    return CrossLibrary(
        library=str(r["cross_library"]),
        max_relative_difference=float(np.max(r["cross_max_relative_difference"])),
        rho=estimate(r["cross_rho"]),
        seed_max_relative_difference=(
            float(np.max(r["seed_max_relative_difference"])) if "seed_max_relative_difference" in r else None
        ),
        seed_rho=estimate(r["seed_rho"]) if "seed_rho" in r else None,
    )


def _null(null: Mapping[str, np.ndarray], sanity: np.ndarray) -> Similarity:
    return Similarity(
        signed_rho=estimate(null["signed"][sanity]),
        abs_rho=estimate(null["abs"][sanity]),
        ssim=estimate(null["ssim"][sanity]),
    )


def _monte_carlo(r: Mapping[str, np.ndarray]) -> MonteCarlo | None:
    """A sampled method's relative additivity error and the Monte Carlo standard error of its sums
    (two draws' difference / sqrt(2)), on the same scale: mean |f(x) - E f|."""
    if "draw_difference" not in r:
        return None
    scale = float(np.mean(np.abs(r["additivity_delta"])))
    if scale == 0:
        return None
    error = float(np.mean(np.abs(r["additivity_error"]))) / scale
    standard_error = float(np.sqrt(np.mean(r["draw_difference"] ** 2 / 2))) / scale
    return MonteCarlo(relative_error=error, relative_standard_error=standard_error, n=len(r["additivity_error"]))
