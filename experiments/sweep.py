"""The evaluate stage of a seed sweep: every seed's figures, and their summaries over seeds.

Each training seed is evaluated like a single-seed study (:func:`experiments.evaluate.evaluate_study`)
on the same split and the same explained images. metrics.json keeps the first seed's full
figures in its usual sections (the report's figures show that seed) and adds ``seeds``:
accuracy per seed and its mean with a 95% Student-t interval over seeds, the paired
comparison per seed and pooled over seeds, the maps' cross-framework agreement over seeds
and the explanation stability under retraining (the same image's map across seeds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import StudyConfig, selected_arms
from common.data.dataset import StudyData
from common.explanation import Explanation
from common.quality.agreement import AGREEMENT_METHOD, agreement
from common.registry import ArmSpec
from common.results import PooledComparison, SeedRun, SeedsSummary, Stability, StudyMetrics
from common.stats import estimate, paired_t_p
from experiments.evaluate import evaluate_study, true_class_maps
from experiments.framework import retraining_ceiling
from experiments.layout import ArmPaths, Selection, unit_config

INTERVAL = (
    "two-sided 95% Student-t interval over seeds (scipy.stats.t, n - 1 degrees of freedom; "
    "wide with few seeds, and not clipped to the quantity's range)"
)
STABILITY_METHOD = (
    f"per image, the mean over pairs of training seeds of the {AGREEMENT_METHOD}; "
    "mean and 95% Student-t interval over the explained images"
)


def evaluate_sweep(cfg: StudyConfig, out: Path, data: StudyData, selection: Selection) -> StudyMetrics:
    """metrics.json's figures of a seed sweep: the first seed's full figures, plus ``seeds``."""
    per_seed = {seed: evaluate_study(unit_config(cfg, seed), out, data, selection) for seed in cfg.training_seeds}
    metrics = per_seed[cfg.training_seeds[0]]
    metrics.config = cfg.to_dict()
    fallbacks = [f for m in per_seed.values() for f in m.fallbacks]
    metrics.fallbacks = list(dict.fromkeys(fallbacks))  # each once, in order
    _, y_test = data.arrays("test")
    metrics.seeds = summarise_seeds(cfg, out, per_seed, y_test[selection.explain_idx])
    if metrics.factorial is not None:  # the retraining ceiling beside the 2 x 2's effects
        metrics.factorial.retraining = retraining_ceiling(metrics.seeds.stability)
    return metrics


def summarise_seeds(cfg: StudyConfig, out: Path, per_seed: dict[int, StudyMetrics], true: np.ndarray) -> SeedsSummary:
    """The per-seed figures and their summaries over seeds; ``true``: the explained images' classes."""
    seeds = list(per_seed)
    runs = [
        SeedRun(
            seed=seed,
            test_accuracy={name: model.test_accuracy for name, model in m.models.items()},
            test_accuracy_ci95={name: model.test_accuracy_ci95 for name, model in m.models.items()},
            comparison=m.comparison,
            agreement=dict(m.agreement.pairs) if m.agreement else {},
        )
        for seed, m in per_seed.items()
    ]
    names = list(runs[0].test_accuracy)
    accuracy = {name: estimate(np.array([r.test_accuracy[name] for r in runs])) for name in names}
    pairs = list(runs[0].agreement)
    agreement_over_seeds = {
        pair: estimate(np.array([np.nan if r.agreement[pair] is None else r.agreement[pair] for r in runs]))
        for pair in pairs
    }
    stability = {
        spec.name: {method: stability_of(cfg, out, spec, method, true) for method in cfg.explain.methods}
        for spec in selected_arms(cfg)
    }
    return SeedsSummary(
        split_seed=cfg.data_seed,
        seeds=seeds,
        interval=INTERVAL,
        stability_method=STABILITY_METHOD,
        runs=runs,
        accuracy=accuracy,
        agreement=agreement_over_seeds,
        stability=stability,
        comparison=pooled_comparison(runs) if all(r.comparison for r in runs) else None,
    )


def stability_of(cfg: StudyConfig, out: Path, spec: ArmSpec, method: str, true: np.ndarray) -> Stability:
    """One model and method: each explained image's map at its true class (the class every seed's
    model shares) compared across training seeds, on the images where every seed's map exists."""
    maps = {}
    for seed in cfg.training_seeds:
        e = Explanation.load(ArmPaths.of(out, spec, seed).attributions(method))
        maps[f"seed-{seed}"] = true_class_maps(unit_config(cfg, seed), out, spec, method, e, true)
    complete = np.all([~np.isnan(m).any(axis=(1, 2)) for m in maps.values()], axis=0)
    result = agreement(  # every pair of seeds
        {label: m[complete][:, None, :, :, None] for label, m in maps.items()},
        {label: np.zeros(int(complete.sum()), np.int64) for label in maps},
    )
    per_image = np.array(
        [[np.nan if rho is None else rho for rho in image.values()] for image in result["per_image"]], dtype=np.float64
    )
    with np.errstate(all="ignore"):
        image_means = np.nanmean(per_image, axis=1) if per_image.size else np.array([])
    return Stability(rho=estimate(image_means), pairs=result["pairs"])


def pooled_comparison(runs: list[SeedRun]) -> PooledComparison:
    """The paired comparison over seeds: the accuracy difference per seed, its mean and t-interval."""
    first = runs[0].comparison
    a, b = first.arm_a, first.arm_b
    name_a, name_b = list(runs[0].test_accuracy)  # registry order, as the comparison's arms
    diff = np.array([r.test_accuracy[name_a] - r.test_accuracy[name_b] for r in runs])
    p = paired_t_p([r.test_accuracy[name_a] for r in runs], [r.test_accuracy[name_b] for r in runs])
    return PooledComparison(
        arm_a=a,
        arm_b=b,
        accuracy_difference=estimate(diff),
        paired_t_p=p,
        seeds_a_better=int((diff > 0).sum()),
        seeds_b_better=int((diff < 0).sum()),
        seeds_tied=int((diff == 0).sum()),
        only_a_correct=sum(r.comparison.only_a_correct for r in runs),
        only_b_correct=sum(r.comparison.only_b_correct for r in runs),
    )
