"""The evaluate stage: every figure of metrics.json, computed from the arms' saved artifacts only.

:func:`evaluate_study` gives a single-seed study's figures (and one seed's of a sweep,
:mod:`experiments.sweep`): each model's test figures and the paired comparison, each
explanation's cost and additivity, the agreement between maps and the attribution-quality
figures (:mod:`experiments.evaluate_quality`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.classification import classification_summary
from common.config import StudyConfig, selected_arms
from common.data.dataset import StudyData, dataset_summary
from common.explanation import Explanation
from common.io import read_json
from common.machine import MachineInfo
from common.quality.agreement import agreement
from common.registry import arm_spec, library_versions, map_label, method_spec, split_map_label
from common.results import (
    Agreement,
    ClassScores,
    ExplanationSummary,
    ModelEvaluation,
    PairedComparison,
    SelectionSummary,
    StudyMetrics,
)
from common.stats import mcnemar_exact
from experiments.evaluate_quality import evaluate_quality
from experiments.layout import ArmPaths, Selection, unit_seed


def evaluate_study(cfg: StudyConfig, out: Path, data: StudyData, selection: Selection) -> StudyMetrics:
    """metrics.json's figures (without the stage records) from the arms' saved artifacts."""
    _, y_test = data.arrays("test")
    classes = list(data.classes)
    metrics = StudyMetrics(
        dataset=dataset_summary(data),
        config=cfg.to_dict(),
        versions=library_versions(),
        models={},
        attributions={},
        fallbacks=[],
        selection=SelectionSummary(selection.explain_idx.tolist(), selection.background_idx.tolist()),
    )
    predictions: dict[str, np.ndarray] = {}
    explanations: dict[tuple[str, str], Explanation] = {}
    for spec in selected_arms(cfg):
        paths = ArmPaths.of(out, spec, unit_seed(cfg))
        model, predictions[spec.key], fallbacks = evaluate_model(paths, y_test, classes)
        metrics.models[spec.name] = model
        machine = read_json(paths.train_json).get("machine")
        if machine is not None:
            metrics.machine = {**(metrics.machine or {}), spec.name: MachineInfo(**machine)}
        metrics.fallbacks += fallbacks
        metrics.attributions[spec.name] = {}
        for method in cfg.explain.methods:
            explanations[(spec.key, method)] = e = Explanation.load(paths.attributions(method))
            metrics.attributions[spec.name][method] = summarise_explanation(e)
    if cfg.explain.output != "logits":
        metrics.fallbacks.append(
            f"Explained quantity: {cfg.explain.output} instead of logits; shap's Deep SHAP treats softmax "
            "differently in PyTorch and TensorFlow, so cross-framework map differences may come from the library."
        )
    if len(predictions) == 2:  # the paired test of the two models, in registry order
        (a, pred_a), (b, pred_b) = predictions.items()
        metrics.comparison = PairedComparison(arm_a=a, arm_b=b, **mcnemar_exact(y_test, pred_a, pred_b))
    if cfg.assess.enabled:
        metrics.quality = evaluate_quality(cfg, out, data)
    if len(explanations) >= 2:
        # each map at its own model's predicted class (explained whatever explain.classes says)
        maps = {map_label(a, m): e.maps_for(e.probabilities.argmax(1))[:, None] for (a, m), e in explanations.items()}
        classes_used = {label: np.zeros(len(m), np.int64) for label, m in maps.items()}
        metrics.agreement = Agreement(**agreement(maps, classes_used))
        metrics.agreement.noise_floor = noise_floors(metrics)
    return metrics


def noise_floors(metrics: StudyMetrics) -> dict[str, float | None]:
    """Per agreement pair, the lower of its two maps' seed-to-seed agreement (1 for a
    deterministic method); None where a sampled map's noise floor was not measured."""

    def floor(label: str) -> float | None:
        split = split_map_label(label)
        if split is None:
            return None
        arm, method = split
        if not method_spec(method).sampled:
            return 1.0
        quality = metrics.quality.arms.get(arm_spec(arm).name) if metrics.quality else None
        mq = quality.methods.get(method) if quality else None
        return mq.noise_floor_rho.mean if mq and mq.noise_floor_rho else None

    result = {}
    for pair in metrics.agreement.pairs:
        a, b = pair.split("~")
        fa, fb = floor(a), floor(b)
        result[pair] = None if fa is None or fb is None else min(fa, fb)
    return result


def evaluate_model(
    paths: ArmPaths, y_test: np.ndarray, classes: list[str]
) -> tuple[ModelEvaluation, np.ndarray, list[str]]:
    """One model's test figures and training record, its predicted classes and its fallbacks."""
    train = read_json(paths.train_json)
    with np.load(paths.predictions) as z:
        proba, predict_seconds = z["probabilities"], float(z["seconds"])
    predicted = proba.argmax(1)
    summary = classification_summary(y_test, predicted, classes)
    model = ModelEvaluation(
        test_accuracy=summary["test_accuracy"],
        test_accuracy_ci95=summary["test_accuracy_ci95"],
        per_class={name: ClassScores(**scores) for name, scores in summary["per_class"].items()},
        confusion_matrix=summary["confusion_matrix"],
        history=train["history"],
        best_val_epoch=train["best_val_epoch"],
        train_seconds=train["train_seconds"],
        predict_seconds=predict_seconds,
        info=train["info"],
        backbone_weights=train["info"].get("backbone_weights"),
    )
    return model, predicted, list(train.get("fallbacks", []))


def summarise_explanation(e: Explanation) -> ExplanationSummary:
    """One explanation's cost and additivity (a note where the method is additive only in expectation)."""
    spec = method_spec(e.method)
    return ExplanationSummary(
        seconds=e.seconds,
        n_images=int(e.attributions.shape[0]),
        n_background=e.n_background,
        n_classes_explained=int(e.attributions.shape[1]),
        n_maps=e.n_maps,
        output=e.output,
        additivity_max_abs_error=e.additivity_max_abs_error,
        additivity_mean_abs_error=e.additivity_mean_abs_error,
        additivity_relative_error=e.additivity_relative_error,
        nsamples=e.nsamples,
        additivity_note=None if spec.additive else f"{spec.title} is additive only in expectation; shown for reference",
    )
