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
from common.config import StudyConfig, selected_arms, twin_arms
from common.data.dataset import StudyData, dataset_summary
from common.explanation import Explanation, channel_sum
from common.io import read_json
from common.machine import MachineInfo
from common.quality.agreement import agreement, attenuation_ceiling, sign_agreement, top_k_agreement
from common.registry import (
    FRAMEWORK_DEFAULTS,
    ArmSpec,
    arm_by_name,
    arm_spec,
    library_versions,
    map_label,
    method_spec,
    split_map_label,
)
from common.results import (
    Agreement,
    ClassScores,
    ExplanationSummary,
    FrameworkCheck,
    ModelEvaluation,
    PairedComparison,
    SelectionSummary,
    StudyMetrics,
)
from common.stats import mcnemar_exact
from common.verdicts import exact
from experiments.evaluate_quality import evaluate_quality
from experiments.framework import check_verdicts, factorial, framework_check, twin_method
from experiments.layout import ArmPaths, Selection, unit_seed

TOP_K_FRACTION = 0.1  # k of the top-k and sign agreement: the most important tenth of the pixels (by |map|)


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
        metrics.quality = evaluate_quality(cfg, out, data, selection)
        add_additivity_verdicts(metrics)
    if len(explanations) >= 2:
        true = y_test[selection.explain_idx]
        metrics.agreement = shared_class_agreement(cfg, out, explanations, true, metrics)
    if cfg.design == "factorial" and cfg.only is None:
        defaults = {arch: [[d.setting, d.pytorch, d.keras] for d in rows] for arch, rows in FRAMEWORK_DEFAULTS.items()}
        arms = selected_arms(cfg)
        metrics.factorial = factorial(arms, y_test, predictions, metrics.agreement, list(cfg.explain.methods), defaults)
    metrics.framework_check = evaluate_framework_check(cfg, out, y_test, selection, predictions, explanations, metrics)
    return metrics


def evaluate_framework_check(
    cfg: StudyConfig,
    out: Path,
    y_test: np.ndarray,
    selection: Selection,
    predictions: dict[str, np.ndarray],
    explanations: dict[tuple[str, str], Explanation],
    metrics: StudyMetrics,
) -> FrameworkCheck | None:
    """ "Is it the framework?" from the twin's artefacts (its unit runs for the first training seed
    only), beside the source arm's own maps and the published arms' agreement; None without a twin."""
    twins = twin_arms(cfg) if cfg.seeds is None or cfg.seed == cfg.training_seeds[0] else []
    if not twins:
        return None
    twin, seed = twins[0], unit_seed(cfg)
    source = arm_spec(twin.weights_of)
    paths, own = ArmPaths.of(out, twin, seed), ArmPaths.of(out, source, seed)
    with np.load(paths.predictions) as z:
        carried = z["probabilities"].argmax(1)
    true = y_test[selection.explain_idx]
    methods, tests = {}, {}
    for method in cfg.explain.methods:
        rows = rho = None
        assessed = own.assessment(method)
        if method_spec(method).sampled and cfg.assess.enabled and assessed.is_file():
            with np.load(assessed) as z:
                if "ceiling_rho" in z.files:
                    rows, rho = z["ceiling"], z["ceiling_rho"]
        twin_maps = Explanation.load(paths.attributions(method))
        methods[method], test = twin_method(explanations[(source.key, method)], twin_maps, true, rows, rho)
        if test is not None:
            tests[method] = test
    check_verdicts(methods, tests)
    others = [s for s in selected_arms(cfg) if s.framework != source.framework]
    other = next((s for s in others if s.architecture != source.architecture), others[0] if others else None)
    both = {**predictions, twin.key: carried}
    return framework_check(source, twin, other, y_test, both, methods, metrics.agreement)


def add_additivity_verdicts(metrics: StudyMetrics) -> None:
    """A deterministic additive method's Monte Carlo verdict: its additivity error (the explain
    stage's) is float rounding or not; a sampled method's comes with its quality (a test)."""
    for spec in (arm_by_name(name) for name in metrics.quality.arms):
        for method, mq in metrics.quality.arms[spec.name].methods.items():
            summary = metrics.attributions.get(spec.name, {}).get(method)
            if summary is not None and method_spec(method).additive:
                mq.verdicts["monte_carlo"] = exact(
                    "monte_carlo_exact", summary.additivity_relative_error, summary.n_maps or 0
                )


def true_class_maps(
    cfg: StudyConfig, out: Path, spec: ArmSpec, method: str, e: Explanation, true: np.ndarray
) -> np.ndarray:
    """(N, H, W) float32: each explained image's channel-summed map at its true class, from the explain
    stage where it explained that class, else from the assess stage's; NaN where neither has it."""
    maps = np.full((len(true), *e.attributions.shape[2:4]), np.nan, np.float32)
    hit = e.explained_classes == true[:, None]  # (N, K')
    rows = np.flatnonzero(hit.any(axis=1))
    maps[rows] = channel_sum(e.attributions[rows, hit[rows].argmax(axis=1)])
    assessed = ArmPaths.of(out, spec, unit_seed(cfg)).assessment(method)
    if cfg.assess.enabled and assessed.is_file():
        with np.load(assessed) as z:
            missing = np.flatnonzero(~hit.any(axis=1))
            maps[missing] = z["true_maps"][missing]
    return maps


def shared_class_agreement(
    cfg: StudyConfig,
    out: Path,
    explanations: dict[tuple[str, str], Explanation],
    true: np.ndarray,
    metrics: StudyMetrics,
) -> Agreement:
    """Every pair of maps compared at the images' true class (a class every model shares), on the
    images where both maps exist, with each pair's ceiling, top-k and sign agreement and the count of
    images on which the two models predict different classes."""
    maps = {map_label(a, m): true_class_maps(cfg, out, arm_spec(a), m, e, true) for (a, m), e in explanations.items()}
    complete = np.all([~np.isnan(m).any(axis=(1, 2)) for m in maps.values()], axis=0)  # (N,)
    result = agreement(
        {label: m[complete][:, None, :, :, None] for label, m in maps.items()},
        {label: np.zeros(int(complete.sum()), np.int64) for label in maps},
    )
    predicted = {map_label(a, m): e.probabilities.argmax(1) for (a, m), e in explanations.items()}
    reliability = {label: _reliability(label, metrics) for label in maps}
    pair_stats = {}
    for pair in result["pairs"]:
        a, b = pair.split("~")
        x, y = maps[a][complete], maps[b][complete]
        ceiling = attenuation_ceiling(reliability[a][0], reliability[b][0])
        pair_stats[pair] = (
            ceiling,
            min(reliability[a][1], reliability[b][1]),
            int((predicted[a] != predicted[b]).sum()),
            float(top_k_agreement(x, y, TOP_K_FRACTION).mean()) if len(x) else None,
            float(sign_agreement(x, y, TOP_K_FRACTION).mean()) if len(x) else None,
        )
    return Agreement(
        **result,
        ceiling={p: v[0] for p, v in pair_stats.items()},
        ceiling_images={p: v[1] for p, v in pair_stats.items()},
        prediction_differs={p: v[2] for p, v in pair_stats.items()},
        top_k={p: v[3] for p, v in pair_stats.items()},
        sign={p: v[4] for p, v in pair_stats.items()},
        top_k_fraction=TOP_K_FRACTION,
        compared_class="true",
    )


def _reliability(label: str, metrics: StudyMetrics) -> tuple[float | None, int]:
    """A map's agreement with a second draw of itself at the true class and on how many images:
    1 for a deterministic method (every image); a sampled one's from the assess stage (None: not measured)."""
    arm, method = split_map_label(label)
    n = len(metrics.selection.explain_test_positions)
    if not method_spec(method).sampled:
        return 1.0, n
    quality = metrics.quality.arms.get(arm_spec(arm).name) if metrics.quality else None
    mq = quality.methods.get(method) if quality else None
    return (mq.reliability.mean, mq.reliability.n) if mq and mq.reliability else (None, 0)


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
