"""Which figures a study's report holds, drawn from its results (:func:`build_figures`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from common import registry
from common.explanation import Explanation
from common.report.names import arm_key, explanation_order, method_title, model_title, shap_title
from common.results import QualitySummary, StudyMetrics


def build_figures(
    out_dir: str | Path,
    metrics: StudyMetrics,
    images: np.ndarray | None,
    true_labels: Sequence[int] | None,
    class_names: Sequence[str],
    explanations: Mapping[tuple[str, str], Explanation],
    max_shap_images: int = 6,
) -> dict[str, str]:
    """Draw every figure of the report under ``<out_dir>/figures/``.

    Args:
        out_dir: the run's output folder.
        metrics: the run's metrics (each model's ``history`` and ``confusion_matrix`` are used).
        images: uint8 (N, H, W, C) explained test images (None when nothing was explained).
        true_labels: (N,) their true classes.
        class_names: the K class names.
        explanations: ``{(arm key, method key): Explanation}``; any subset, all over the same
            N images.
        max_shap_images: images per shap.image_plot figure.

    Returns:
        ``{figure key: path relative to out_dir}``, e.g. ``{"training_curves":
        "figures/training_curves.png", "shap_pytorch_deep": "figures/shap_pytorch_deep.png"}``;
        figures without data (no history, no explanation) are left out.
    """
    # matplotlib and scikit-learn's plotting (1 s to import) load when a report is drawn, not
    # with this module: the runner imports it with the pipeline, and a rerun whose report
    # stage is cached draws nothing.
    from common.report.plots import plot_confusion_matrices, plot_quality_curves, plot_training_curves

    out_dir = Path(out_dir)
    figures: dict[str, str] = {}

    def target(key: str) -> Path:
        figures[key] = f"figures/{key}.png"
        return out_dir / figures[key]

    histories = {model_title(k): m.history for k, m in metrics.models.items() if m.history}
    if histories:
        plot_training_curves(histories, target("training_curves"))
    matrices = {model_title(k): m.confusion_matrix for k, m in metrics.models.items() if m.confusion_matrix}
    if matrices:
        plot_confusion_matrices(matrices, class_names, target("confusion_matrices"))
    if explanations and images is not None and true_labels is not None:
        _draw_maps(images, true_labels, class_names, explanations, target, max_shap_images)
    if metrics.quality is not None and metrics.quality.arms:
        plot_quality_curves(_quality_curves(metrics.quality), target("quality_curves"))
    return figures


def _draw_maps(
    images: np.ndarray,
    true_labels: Sequence[int],
    class_names: Sequence[str],
    explanations: Mapping[tuple[str, str], Explanation],
    target: Callable[[str], Path],
    max_shap_images: int,
) -> None:
    """The attribution grid of every explanation, then shap's image plot of each."""
    from common.report.plots import plot_attribution_grid, plot_shap_image

    ordered = sorted(explanations, key=explanation_order)
    columns = {registry.map_title(arm, method): explanations[(arm, method)] for arm, method in ordered}
    plot_attribution_grid(images, true_labels, class_names, columns, target("attribution_grid"))
    for arm, method in ordered:
        plot_shap_image(
            images,
            explanations[(arm, method)],
            class_names,
            target(f"shap_{arm}_{method}"),
            max_images=max_shap_images,
            title=shap_title(arm, method),
        )


def _quality_curves(quality: QualitySummary) -> dict[str, dict]:
    """The assess stage's mean curves as :func:`plot_quality_curves` takes them, titled for display."""
    curves = {}
    for name, aq in quality.arms.items():
        arm = arm_key(name)
        curves[model_title(name)] = {
            "fractions": aq.fractions,
            "chance": aq.chance,
            "random": {"deletion": aq.random.deletion_curve, "insertion": aq.random.insertion_curve},
            "methods": {
                method_title(method): {"deletion": mq.deletion_curve, "insertion": mq.insertion_curve}
                for method, mq in sorted(aq.methods.items(), key=lambda kv: explanation_order((arm, kv[0])))
            },
        }
    return curves
