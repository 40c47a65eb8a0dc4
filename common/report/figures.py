"""Every figure a study's report holds, drawn from its results as a ``matplotlib`` Figure.

One function per figure (:data:`FIGURES`), each from a :class:`FigureData` and options that
choose what it shows (arms, methods, images, classes); :func:`figure` draws one by name, and
:func:`build_figures` draws the report's set and saves them as PNGs. The report stage and the
Python API (``experiments.Study.figure``) both draw through these functions.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common import registry
from common.errors import ChoiceError, UnavailableError
from common.explanation import Explanation
from common.report.choose import choose_arms, choose_classes, choose_images, choose_methods
from common.report.names import arm_key, explanation_order, method_title, model_title, shap_title
from common.results import StudyMetrics

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.figure import Figure

# The figures a report can hold; a report's "shap_<arm>_<method>" figures are shap_image's.
FIGURES = ("training_curves", "confusion_matrices", "attribution_grid", "quality_curves", "shap_image")
MAP_FIGURES = ("attribution_grid", "shap_image")  # drawn from the explained images and their maps


@dataclass
class FigureData:
    """What a study's figures are drawn from.

    Attributes
    ----------
    metrics : common.results.StudyMetrics
        The study's results (histories, confusion matrices, quality curves).
    class_names : sequence of str
        The K class names.
    images : numpy.ndarray or None
        uint8 (N, H, W, C) explained test images (None: the map figures cannot be drawn).
    true_labels : numpy.ndarray or None
        (N,) their true classes.
    explanations : mapping
        ``{(arm key, method key): Explanation}`` over the same N images; any subset (a mapping
        that loads each on access will do).
    """

    metrics: StudyMetrics
    class_names: Sequence[str]
    images: np.ndarray | None = None
    true_labels: np.ndarray | None = None
    explanations: Mapping[tuple[str, str], Explanation] = field(default_factory=dict)

    def arm_names(self) -> list[str]:
        """The arms with results, by name (e.g. ``pytorch_cnn``), in the study's order."""
        return list(self.metrics.models)


def training_curves(data: FigureData, *, arms: Iterable[str] | str | None = None) -> Figure:
    """Loss and accuracy per epoch, train and validation, one column per model.

    Parameters
    ----------
    data : FigureData
    arms : str or iterable of str, optional
        The models shown, by arm key (``"pytorch"``) or name (default: every model).
    """
    from common.report.plots import training_curves_figure

    chosen = choose_arms(data.arm_names(), arms)
    return training_curves_figure({model_title(n): data.metrics.models[n].history for n in chosen})


def confusion_matrices(
    data: FigureData, *, arms: Iterable[str] | str | None = None, classes: Iterable[str | int] | None = None
) -> Figure:
    """The models' test confusion matrices side by side (rows: true class).

    Parameters
    ----------
    data : FigureData
    arms : str or iterable of str, optional
        The models shown (default: every model).
    classes : iterable of str or int, optional
        The rows and columns shown, by class name or index (default: every class); the counts
        of the other classes are left out.
    """
    from common.report.plots import confusion_matrices_figure

    chosen = choose_arms(data.arm_names(), arms)
    keep = choose_classes(data.class_names, classes)
    matrices = {}
    for name in chosen:
        matrix = np.asarray(data.metrics.models[name].confusion_matrix, dtype=int)
        matrices[model_title(name)] = matrix[np.ix_(keep, keep)] if matrix.size else matrix
    return confusion_matrices_figure(matrices, [data.class_names[k] for k in keep])


def _explained(data: FigureData, arms, methods) -> list[tuple[str, str]]:
    """The (arm key, method key) pairs chosen, in report order, among those with maps."""
    pairs = sorted(data.explanations, key=explanation_order)
    by_key = {arm_key(n): n for n in data.arm_names()}
    names = [by_key.get(a, a) for a in dict.fromkeys(a for a, _ in pairs)]
    keys = {arm_key(n) for n in choose_arms(names, arms)}
    chosen_methods = choose_methods(list(dict.fromkeys(m for _, m in pairs)), methods)
    chosen = [(a, m) for a, m in pairs if a in keys and m in chosen_methods]
    if not chosen:
        raise ChoiceError("no maps to show: none of the chosen arms has maps of the chosen methods")
    return chosen


def _map_inputs(data: FigureData, images, classes) -> tuple[np.ndarray, np.ndarray]:
    """The explained images chosen (positions) and all of their true labels."""
    if data.images is None or data.true_labels is None:
        raise UnavailableError("the explained images are not available, so no map can be drawn")
    keep = None if classes is None else choose_classes(data.class_names, classes)
    return choose_images(data.true_labels, images, keep), np.asarray(data.true_labels)


def attribution_grid(
    data: FigureData,
    *,
    images: Iterable[int] | int | None = None,
    classes: Iterable[str | int] | None = None,
    arms: Iterable[str] | str | None = None,
    methods: Iterable[str] | str | None = None,
) -> Figure:
    """One row per explained image: the image, then each model's map for its own predicted class
    over a grey copy of it, one colour scale per row.

    Parameters
    ----------
    data : FigureData
    images : int or iterable of int, optional
        Positions among the explained images, from 0 (as the titles number them; default: all).
    classes : iterable of str or int, optional
        Only the images of these true classes (names or indices).
    arms, methods : str or iterable of str, optional
        The columns: arm keys or names, method keys (default: every map of the study).
    """
    from common.report.plots import attribution_grid_figure

    positions, labels = _map_inputs(data, images, classes)
    columns = {}
    for arm, method in _explained(data, arms, methods):
        ex = data.explanations[(arm, method)]
        columns[registry.map_title(arm, method)] = _rows(ex, positions)
    return attribution_grid_figure(data.images[positions], labels[positions], data.class_names, columns, positions)


def _rows(ex: Explanation, positions: np.ndarray) -> Explanation:
    """An explanation of the chosen images only."""
    return Explanation(
        method=ex.method,
        output=ex.output,
        attributions=ex.attributions[positions],
        base_values=ex.base_values,
        outputs=ex.outputs[positions],
        probabilities=ex.probabilities[positions],
        seconds=ex.seconds,
        n_background=ex.n_background,
        nsamples=ex.nsamples,
        classes=None if ex.classes is None else ex.classes[positions],
    )


def shap_image(
    data: FigureData,
    *,
    arm: str | None = None,
    method: str | None = None,
    images: Iterable[int] | int | None = None,
    classes: Iterable[str | int] | None = None,
    max_images: int = 6,
    max_classes: int = 10,
) -> Figure:
    """shap's own image plot of one model's maps from one method: a row per image, a column per
    explained class (the report's ``shap_<arm>_<method>`` figures).

    Parameters
    ----------
    data : FigureData
    arm, method : str, optional
        The model (arm key or name) and the method (default: the first of the study's maps).
    images : int or iterable of int, optional
        Positions among the explained images (default: ``max_images`` spread over them).
    classes : iterable of str or int, optional
        Only the images of these true classes.
    max_images : int
        Images shown when ``images`` is not given.
    max_classes : int
        With more classes than this, each row shows its own most probable ones.
    """
    from common.report.shap_plot import shap_image_figure, spread

    chosen_arm, chosen_method = _explained(data, arm, method)[0]
    positions, _ = _map_inputs(data, images, classes)
    if images is None:
        positions = positions[spread(len(positions), max_images)]
    return shap_image_figure(
        data.images,
        data.explanations[(chosen_arm, chosen_method)],
        data.class_names,
        positions=positions,
        max_classes=max_classes,
        title=shap_title(chosen_arm, chosen_method),
    )


def quality_curves(
    data: FigureData, *, arms: Iterable[str] | str | None = None, methods: Iterable[str] | str | None = None
) -> Figure:
    """Deletion and insertion curves of the assess stage, one row per model.

    Parameters
    ----------
    data : FigureData
    arms : str or iterable of str, optional
        The models shown (default: every model assessed).
    methods : str or iterable of str, optional
        The methods drawn, e.g. ``"deep"`` or the baseline ``"gradinput"`` (default: all); the
        random pixel order and chance are always drawn.
    """
    from common.report.plots import quality_curves_figure

    quality = data.metrics.quality
    if quality is None or not quality.arms:
        raise UnavailableError("this study has no quality curves (it ran without the assess stage)")
    curves = {}
    assessed = list(dict.fromkeys(m for aq in quality.arms.values() for m in aq.methods))
    chosen_methods = choose_methods(assessed, methods)
    for name in choose_arms(list(quality.arms), arms):
        aq, arm = quality.arms[name], arm_key(name)
        shown = [m for m in sorted(aq.methods, key=lambda m: explanation_order((arm, m))) if m in chosen_methods]
        curves[model_title(name)] = {
            "fractions": aq.fractions,
            "chance": aq.chance,
            "random": {"deletion": aq.random.deletion_curve, "insertion": aq.random.insertion_curve},
            "methods": {
                method_title(m): {"deletion": aq.methods[m].deletion_curve, "insertion": aq.methods[m].insertion_curve}
                for m in shown
            },
        }
    return quality_curves_figure(curves)


DRAW = {
    "training_curves": training_curves,
    "confusion_matrices": confusion_matrices,
    "attribution_grid": attribution_grid,
    "quality_curves": quality_curves,
    "shap_image": shap_image,
}


def figure(name: str, data: FigureData, **options) -> Figure:
    """The figure ``name`` (one of :data:`FIGURES`, or a report's ``shap_<arm>_<method>``) drawn
    from ``data`` with ``options`` (the keyword arguments of that figure's function).

    Raises
    ------
    ChoiceError
        An unknown figure, or an option that names what the study does not hold.
    UnavailableError
        The study lacks what the figure is drawn from.
    """
    if name.startswith("shap_") and name != "shap_image":
        label = name.removeprefix("shap_")
        pair = next((p for p in data.explanations if f"{p[0]}_{p[1]}" == label), None)
        pair = pair or registry.split_map_label(label) or tuple(label.rsplit("_", 1))
        name, options = "shap_image", {"arm": pair[0], "method": pair[-1], **options}
    if name not in DRAW:
        raise ChoiceError(f"no figure {name!r}; the figures: {', '.join(FIGURES)} (and shap_<arm>_<method>)")
    known = [p for p in inspect.signature(DRAW[name]).parameters if p != "data"]
    unknown = [o for o in options if o not in known]
    if unknown:
        raise ChoiceError(f"figure {name!r} has no option {unknown[0]!r}; its options: {', '.join(known)}")
    return DRAW[name](data, **options)


def figure_keys(metrics: StudyMetrics, explained: Iterable[tuple[str, str]], images: bool = True) -> list[str]:
    """The figures a report of ``metrics`` holds, in report order: those with data (a history,
    a matrix, quality curves), and with ``images`` the attribution grid and one
    ``shap_<arm>_<method>`` per explanation of ``explained`` ((arm key, method key) pairs)."""
    keys = []
    if any(m.history for m in metrics.models.values()):
        keys.append("training_curves")
    if any(m.confusion_matrix for m in metrics.models.values()):
        keys.append("confusion_matrices")
    pairs = sorted(explained, key=explanation_order)
    if pairs and images:
        keys += ["attribution_grid", *(f"shap_{arm}_{method}" for arm, method in pairs)]
    if metrics.quality is not None and metrics.quality.arms:
        keys.append("quality_curves")
    return keys


def build_figures(
    out_dir: str | Path,
    metrics: StudyMetrics,
    images: np.ndarray | None,
    true_labels: Sequence[int] | None,
    class_names: Sequence[str],
    explanations: Mapping[tuple[str, str], Explanation],
    max_shap_images: int = 6,
) -> dict[str, str]:
    """Draw every figure of the report (:func:`figure_keys`) and save it under ``<out_dir>/figures/``.

    Parameters
    ----------
    out_dir : str or Path
        The run's output folder.
    metrics : common.results.StudyMetrics
        The run's metrics (each model's ``history`` and ``confusion_matrix`` are used).
    images : numpy.ndarray or None
        uint8 (N, H, W, C) explained test images (None when nothing was explained).
    true_labels : sequence of int or None
        (N,) their true classes.
    class_names : sequence of str
        The K class names.
    explanations : mapping
        ``{(arm key, method key): Explanation}``; any subset, all over the same N images.
    max_shap_images : int
        Images per shap.image_plot figure.

    Returns
    -------
    dict
        ``{figure key: path relative to out_dir}``, e.g. ``{"training_curves":
        "figures/training_curves.png", "shap_pytorch_deep": "figures/shap_pytorch_deep.png"}``;
        figures without data (no history, no explanation) are left out.
    """
    # matplotlib and scikit-learn's plotting (1 s to import) load when a report is drawn, not
    # with this module: the runner imports it with the pipeline, and a rerun whose report
    # stage is cached draws nothing.
    from common.report.plots import save_figure

    out_dir = Path(out_dir)
    labels = None if true_labels is None else np.asarray(true_labels)
    data = FigureData(metrics, list(class_names), images, labels, explanations)
    figures: dict[str, str] = {}
    for key in figure_keys(metrics, explanations, images is not None and true_labels is not None):
        shap = key.startswith("shap_")
        fig = figure(key, data, **({"max_images": max_shap_images} if shap else {}))
        figures[key] = f"figures/{key}.png"
        # shap leaves wide empty margins: its figure is cut to what it draws
        save_figure(fig, out_dir / figures[key], **({"bbox_inches": "tight"} if shap else {}))
    return figures
