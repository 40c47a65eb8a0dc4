"""The report's tables as tidy pandas DataFrames: one row per model (× method, × class, × seed),
one column per quantity, from a study's typed results alone.

Every table names a model twice, by its arm's key (``arm``: ``pytorch``, what the Python API's
arguments take) and by the report's title (``model``: ``PyTorch CNN``), and a method by its key
(``method``: ``deep``) and title (``method_title``: ``Deep SHAP``). A mean over images comes with
its 95% interval as ``<name>``, ``<name>_low`` and ``<name>_high``. A table whose section the
study lacks (no seed sweep, no assess stage) is empty, with its columns.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from common.report.names import arm_key, map_label_title, method_title, model_title
from common.results import Estimate, MethodQuality, StudyMetrics, Verdict

ACCURACY = [
    "arm", "model", "test_accuracy", "ci95_low", "ci95_high", "train_seconds", "predict_seconds", "best_val_epoch",
    "epochs", "backbone_weights", "device",
]  # fmt: skip
PER_CLASS = ["arm", "model", "class", "support", "precision", "recall", "f1"]
AGREEMENT = [
    "pair", "map_a", "map_b", "spearman_rho", "ceiling", "ceiling_images", "top_k", "sign", "images",
    "predictions_differ", "noise_floor", "compared_class",
]  # fmt: skip
EXPLAINERS = [
    "arm", "model", "method", "method_title", "output", "seconds", "images", "maps", "background", "nsamples",
    "additivity_max_abs_error", "additivity_relative_error",
]  # fmt: skip
QUALITY = ["arm", "model", "method", "method_title", "images", "sanity_images"]
VERDICTS = [
    "arm", "model", "method", "method_title", "check", "status", "effect", "effect_low", "effect_high", "reference",
    "p", "p_holm", "images", "images_needed", "rule",
]  # fmt: skip
SEEDS = ["arm", "model", "seed", "test_accuracy", "ci95_low", "ci95_high"]
STABILITY = [
    "arm", "model", "method", "method_title", "stability_rho", "stability_rho_low", "stability_rho_high", "images",
]  # fmt: skip
FRAMEWORK_CHECK = [
    "arm", "model", "twin", "method", "method_title", "max_relative_difference", "spearman_rho", "spearman_rho_low",
    "spearman_rho_high", "ceiling", "models_rho", "models_ceiling", "status", "p_holm", "images", "maps",
    "test_accuracy", "twin_test_accuracy", "predictions_differ",
]  # fmt: skip
FACTORIAL = [
    "factor", "held", "arm_a", "arm_b", "accuracy_difference", "mcnemar_p", "mcnemar_p_holm", "method",
    "method_title", "spearman_rho", "ceiling", "images", "retraining_a", "retraining_b",
]  # fmt: skip


def _names(name: str) -> dict[str, str]:
    return {"arm": arm_key(name), "model": model_title(name)}


def _method(key: str) -> dict[str, str]:
    return {"method": key, "method_title": method_title(key)}


def _estimate(prefix: str, e: Estimate | None) -> dict[str, float | None]:
    """An estimate as three columns: its mean and 95% interval."""
    low, high = (e.ci95 + [None, None])[:2] if e is not None else (None, None)
    return {prefix: None if e is None else e.mean, f"{prefix}_low": low, f"{prefix}_high": high}


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame with ``columns`` first (then any other column the rows hold, in order)."""
    extra = [c for row in rows for c in row if c not in columns]
    return pd.DataFrame(rows, columns=columns + list(dict.fromkeys(extra)))


def accuracy_table(metrics: StudyMetrics) -> pd.DataFrame:
    """Test accuracy per model with its exact 95% interval (Clopper–Pearson), as "Test accuracy" shows it."""
    rows = []
    for name, e in metrics.models.items():
        low, high = e.test_accuracy_ci95
        epochs = len(e.history.get("val_loss") or e.history.get("train_loss") or [])
        rows.append(
            {
                **_names(name),
                "test_accuracy": e.test_accuracy,
                "ci95_low": low,
                "ci95_high": high,
                "train_seconds": e.train_seconds,
                "predict_seconds": e.predict_seconds,
                "best_val_epoch": e.best_val_epoch,
                "epochs": epochs,
                "backbone_weights": e.backbone_weights,
                "device": e.device,
            }
        )
    return _frame(rows, ACCURACY)


def per_class_table(metrics: StudyMetrics) -> pd.DataFrame:
    """Precision, recall and F1 per model and class ("Per-class precision, recall and F1")."""
    rows = [
        {**_names(name), "class": cls, "support": s.support, "precision": s.precision, "recall": s.recall, "f1": s.f1}
        for name, e in metrics.models.items()
        for cls, s in e.per_class.items()
    ]
    return _frame(rows, PER_CLASS)


def agreement_table(metrics: StudyMetrics) -> pd.DataFrame:
    """Agreement between every pair of maps ("Agreement between maps"): mean Spearman ρ, its ceiling,
    top-k and sign agreement (schema 3), or the noise floor (schema 2)."""
    a = metrics.agreement
    if a is None:
        return _frame([], AGREEMENT)
    rows = []
    for pair, rho in a.pairs.items():
        first, _, second = pair.partition("~")
        rows.append(
            {
                "pair": f"{map_label_title(first)} vs {map_label_title(second)}",
                "map_a": first,
                "map_b": second,
                "spearman_rho": rho,
                "ceiling": a.ceiling.get(pair),
                "ceiling_images": a.ceiling_images.get(pair),
                "top_k": a.top_k.get(pair),
                "sign": a.sign.get(pair),
                "images": a.n_images.get(pair),
                "predictions_differ": a.prediction_differs.get(pair),
                "noise_floor": a.noise_floor.get(pair),
                "compared_class": a.compared_class,
            }
        )
    return _frame(rows, AGREEMENT)


def explainers_table(metrics: StudyMetrics) -> pd.DataFrame:
    """Each model's maps per method: cost, images, maps and additivity ("Explainers")."""
    rows = [
        {
            **_names(name),
            **_method(method),
            "output": s.output,
            "seconds": s.seconds,
            "images": s.n_images,
            "maps": s.n_maps,
            "background": s.n_background,
            "nsamples": s.nsamples,
            "additivity_max_abs_error": s.additivity_max_abs_error,
            "additivity_relative_error": s.additivity_relative_error,
        }
        for name, by_method in metrics.attributions.items()
        for method, s in by_method.items()
    ]
    return _frame(rows, EXPLAINERS)


def _quality_row(q: MethodQuality) -> dict[str, Any]:
    """One model × method of "Attribution quality": faithfulness, sanity checks, consistency."""
    row: dict[str, Any] = {"images": q.n_images, "sanity_images": q.n_sanity}
    for mode in ("deletion", "insertion"):
        row.update(_estimate(f"{mode}_auc", getattr(q, f"{mode}_auc")))
        row.update(_estimate(f"{mode}_vs_random", getattr(q, f"{mode}_effect")))
        row[f"{mode}_p_vs_random"] = getattr(q, f"{mode}_p_vs_random")
    chance = q.chance
    row["fraction_at_chance"] = chance.median if chance else q.deletion_chance_fraction.mean
    row["fraction_at_chance_censored"] = chance.censored if chance else None
    row.update(_estimate("sparseness", q.sparseness))
    for scope, r in q.randomisation.items():
        row.update(_estimate(f"randomisation_{scope}_rho", r.signed_rho))
        row[f"randomisation_{scope}_abs_rho"] = r.abs_rho.mean
    row.update(_estimate("random_logit_rho", q.random_logit_rho))
    row["random_logit_abs_rho"] = q.random_logit_abs_rho.mean
    row["null_rho"] = q.null.signed_rho.mean if q.null else None
    c = q.cross_library
    row["cross_library"] = c.library if c else None
    row["cross_library_max_difference"] = c.max_relative_difference if c else None
    row["cross_library_rho"] = c.rho.mean if c else None
    row["monte_carlo_relative_error"] = q.monte_carlo.relative_error if q.monte_carlo else None
    row["monte_carlo_standard_error"] = q.monte_carlo.relative_standard_error if q.monte_carlo else None
    row["reliability"] = q.reliability.mean if q.reliability else None
    row.update({f"{check}_verdict": v.status for check, v in q.verdicts.items()})
    return row


def quality_table(metrics: StudyMetrics) -> pd.DataFrame:
    """Attribution quality per model × method, and each model's random pixel order (method
    ``random``): the figures of the report's faithfulness, sanity-check and consistency tables,
    with each verdict's status in ``<check>_verdict`` (details in :func:`verdicts_table`)."""
    rows: list[dict[str, Any]] = []
    for name, aq in (metrics.quality.arms if metrics.quality else {}).items():
        r = aq.random
        random = {**_estimate("deletion_auc", r.deletion_auc), **_estimate("insertion_auc", r.insertion_auc)}
        chance = aq.random_chance.median if aq.random_chance else r.deletion_chance_fraction.mean
        rows.append({**_names(name), "method": "random", "method_title": "random order", **random})
        rows[-1]["fraction_at_chance"] = chance
        rows += [{**_names(name), **_method(m), **_quality_row(q)} for m, q in aq.methods.items()]
    return _frame(rows, QUALITY)


def _verdict_row(check: str, v: Verdict) -> dict[str, Any]:
    return {
        "check": check,
        "status": v.status,
        **_estimate("effect", v.effect),
        "reference": v.reference,
        "p": v.p,
        "p_holm": v.p_holm,
        "images": v.n,
        "images_needed": v.n_needed,
        "rule": v.rule,
    }


def verdicts_table(metrics: StudyMetrics) -> pd.DataFrame:
    """Every verdict ("At a glance" and the quality tables): one row per model × method × check,
    with its status, the statistic it reads (``effect``) and its interval, what it is tested
    against, the p-values (``p_holm``: Holm-corrected within the model) and the images behind it.
    Empty for a study without verdicts (no assess stage, or schema version 2)."""
    rows = [
        {**_names(name), **_method(m), **_verdict_row(check, v)}
        for name, aq in (metrics.quality.arms if metrics.quality else {}).items()
        for m, q in aq.methods.items()
        for check, v in q.verdicts.items()
    ]
    return _frame(rows, VERDICTS)


def seeds_table(metrics: StudyMetrics) -> pd.DataFrame:
    """A seed sweep's test accuracy per model and training seed ("Across training seeds"); empty
    for a single-seed study."""
    s = metrics.seeds
    rows = []
    for run in s.runs if s else []:
        for name, acc in run.test_accuracy.items():
            low, high = (run.test_accuracy_ci95.get(name) or [None, None])[:2]
            rows.append({**_names(name), "seed": run.seed, "test_accuracy": acc, "ci95_low": low, "ci95_high": high})
    return _frame(rows, SEEDS)


def stability_table(metrics: StudyMetrics) -> pd.DataFrame:
    """How much a model's maps of the same image change when only the training seed changes
    ("Stability under retraining"): per model × method the mean Spearman ρ across seeds with its
    95% interval over images; empty for a single-seed study."""
    s = metrics.seeds
    rows = [
        {**_names(name), **_method(m), **_estimate("stability_rho", st.rho), "images": st.rho.n}
        for name, by_method in (s.stability if s else {}).items()
        for m, st in by_method.items()
    ]
    return _frame(rows, STABILITY)


def framework_check_table(metrics: StudyMetrics) -> pd.DataFrame:
    """ "Is it the framework?": per method, the same network's maps in its own framework and in the
    other (its twin): the largest relative difference, Spearman at the true class with its interval,
    the Monte Carlo ceiling of a sampled method, the published arms' agreement beside it, the
    verdict, and both networks' test accuracy. Empty for a study without the check."""
    c = metrics.framework_check
    rows = []
    for m, t in (c.methods if c else {}).items():
        v = t.verdict
        rows.append(
            {
                **_names(c.source),
                "twin": c.twin,
                **_method(m),
                "max_relative_difference": t.max_relative_difference,
                **_estimate("spearman_rho", t.rho),
                "ceiling": t.ceiling.mean if t.ceiling else None,
                "models_rho": t.models_rho,
                "models_ceiling": t.models_ceiling,
                "status": v.status if v else None,
                "p_holm": v.p_holm if v else None,
                "images": t.rho.n,
                "maps": t.n_maps,
                "test_accuracy": c.test_accuracy,
                "twin_test_accuracy": c.twin_test_accuracy,
                "predictions_differ": c.predictions_differ,
            }
        )
    return _frame(rows, FRAMEWORK_CHECK)


def factorial_table(metrics: StudyMetrics) -> pd.DataFrame:
    """The 2 x 2 ("Framework or architecture?"): per comparison (framework effect at each
    architecture, architecture effect in each framework) and method, the accuracy difference with
    its McNemar p (and Holm's over the four), the maps' Spearman at the true class with its ceiling,
    and each arm's stability across seeds (the retraining ceiling; None without a seed sweep).
    Empty for the published design."""
    f = metrics.factorial
    rows = []
    for c in f.comparisons if f else []:
        for m in c.rho:
            retrain = [f.retraining.get(arm, {}).get(m) for arm in (c.arm_a, c.arm_b)]
            rows.append(
                {
                    "factor": c.factor,
                    "held": c.held,
                    "arm_a": arm_key(c.arm_a),
                    "arm_b": arm_key(c.arm_b),
                    "accuracy_difference": c.accuracy_difference,
                    "mcnemar_p": c.comparison.mcnemar_p,
                    "mcnemar_p_holm": c.mcnemar_p_holm,
                    **_method(m),
                    "spearman_rho": c.rho[m],
                    "ceiling": c.ceiling.get(m),
                    "images": c.n_images.get(m),
                    "retraining_a": retrain[0].mean if retrain[0] else None,
                    "retraining_b": retrain[1].mean if retrain[1] else None,
                }
            )
    return _frame(rows, FACTORIAL)


TABLES = {
    "accuracy": accuracy_table,
    "per_class": per_class_table,
    "agreement": agreement_table,
    "explainers": explainers_table,
    "quality": quality_table,
    "verdicts": verdicts_table,
    "seeds": seeds_table,
    "stability": stability_table,
    "framework_check": framework_check_table,
    "factorial": factorial_table,
}
