"""The evaluate stage's attribution-quality figures: the assess stage's per-image arrays summarised
per model and method, with their tests, settings and findings (metrics.json's ``quality``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.config import StudyConfig, selected_arms
from common.data.dataset import StudyData
from common.quality.faithfulness import curve_auc, fraction_at
from common.registry import RANDOMISATION_SCOPES
from common.report.findings import SANITY_THRESHOLD, findings
from common.results import (
    ArmQuality,
    CrossLibrary,
    MethodQuality,
    PairTest,
    QualitySummary,
    RandomBaseline,
    Randomisation,
)
from common.stats import estimate, paired_p
from experiments.assess import insertion_baseline_text
from experiments.layout import ArmPaths, assessed_methods, unit_seed


def evaluate_quality(cfg: StudyConfig, out: Path, data: StudyData) -> QualitySummary:
    """The attribution-quality figures from the assess stage's arrays, and their findings."""
    arms: dict[str, ArmQuality] = {}
    for spec in selected_arms(cfg):
        paths = ArmPaths.of(out, spec, unit_seed(cfg))
        with np.load(paths.assessment("random")) as z:
            random = {k: z[k] for k in z.files}
        methods = {}
        for method in assessed_methods(cfg):
            with np.load(paths.assessment(method)) as z:
                methods[method] = {k: z[k] for k in z.files}
        arms[spec.name] = summarise_arm(random, methods, len(data.classes))
    a = cfg.assess
    settings = {
        "steps": a.steps,
        "random_orders": a.random_orders,
        "deletion_fill": "the background set's mean image",
        "insertion_baseline": insertion_baseline_text(a, data.image_size),
        "explained_class": "each model's predicted class",
        "n_sanity": a.n_sanity,
        "randomised_scopes": {scope: RANDOMISATION_SCOPES[scope] for scope in a.randomise},
        "randomisation_rule": (
            "each learned tensor re-drawn from a normal distribution with its own mean and standard deviation "
            "(seeded); batch-norm running statistics and the fixed preprocessing are kept"
        ),
        "random_logit": "the explained class's map against a randomly drawn other class's (seeded)",
        "sanity_threshold": SANITY_THRESHOLD,
        "cross_check": a.cross_check,
    }
    names = {spec.name: spec.key for spec in selected_arms(cfg)}
    titles = {spec.name: spec.title for spec in selected_arms(cfg)}
    return QualitySummary(settings=settings, arms=arms, findings=findings(arms, names, titles))


def summarise_arm(
    random: Mapping[str, np.ndarray], methods: Mapping[str, Mapping[str, np.ndarray]], n_classes: int
) -> ArmQuality:
    """One arm's :class:`ArmQuality` from the arrays of :func:`experiments.assess.assess_random`
    and :func:`experiments.assess.assess_method` (one per method)."""
    fr = np.asarray(random["fractions"])
    chance = 1.0 / n_classes
    baseline, rand_del, rand_ins = _random_baseline(random, chance)
    out = {method: _method_quality(r, fr, chance, rand_del, rand_ins) for method, r in methods.items()}
    aucs = {method: (curve_auc(fr, r["deletion"]), curve_auc(fr, r["insertion"])) for method, r in methods.items()}
    tests = {}
    names = list(aucs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            tests[f"{a}~{b}"] = PairTest(
                deletion_p=paired_p(aucs[a][0], aucs[b][0]),
                insertion_p=paired_p(aucs[a][1], aucs[b][1]),
            )
    return ArmQuality(
        fractions=fr.tolist(),
        chance=chance,
        random=baseline,
        methods=out,
        method_tests=tests,
        seconds=float(random["seconds"]) + sum(m.seconds for m in out.values()),
    )


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
    r: Mapping[str, np.ndarray], fr: np.ndarray, chance: float, rand_del: np.ndarray, rand_ins: np.ndarray
) -> MethodQuality:
    """One method's figures from its assess arrays, tested against the random orders' AUCs per image."""
    d_auc, i_auc = curve_auc(fr, r["deletion"]), curve_auc(fr, r["insertion"])
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
    return MethodQuality(
        n_images=int(len(r["classes"])),
        n_sanity=int(len(r["sanity"])),
        deletion_auc=estimate(d_auc),
        insertion_auc=estimate(i_auc),
        deletion_p_vs_random=paired_p(d_auc, rand_del),
        insertion_p_vs_random=paired_p(i_auc, rand_ins),
        deletion_chance_fraction=estimate(fraction_at(fr, r["deletion"], chance)),
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
