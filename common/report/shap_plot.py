"""shap's own image plot of one explanation (:func:`shap_image_figure`): a row per image, a
column per explained class, as shap draws it through pyplot, with the study's titles."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from common.explanation import Explanation
from common.report.plots import _text

# shap draws through pyplot. The study draws PNGs, never windows: pyplot's backend is Agg unless
# whoever runs this chose one (MPLBACKEND, which a Jupyter kernel sets to its inline backend) or
# imported pyplot already.
if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

COLORBAR_GAP = 0.3  # inches between the last row of maps and shap's colour bar


def to_image_plot_lists(attributions: np.ndarray) -> list[np.ndarray]:
    """(N, K, H, W, C) -> list of K arrays of shape (N, H, W, C), as shap.image_plot expects.

    shap.image_plot handed the 5-D array itself silently plots the sum over classes.
    """
    attributions = np.asarray(attributions)
    if attributions.ndim != 5:
        raise ValueError(f"expected attributions of shape (N, K, H, W, C), got {attributions.shape}")
    return [attributions[:, k] for k in range(attributions.shape[1])]


def spread(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices evenly spread over ``range(n)`` (first and last included)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def _shap_columns(
    explanation: Explanation, idx: np.ndarray, class_names: Sequence[str], max_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The maps (n, K', H, W, C) of images ``idx`` that shap's image plot shows, and their column
    titles (n, K'): "class (probability)", with "predicted:"/"true:" for a class table."""
    attr = np.asarray(explanation.attributions)[idx]  # (n, K', H, W, C)
    probs = np.asarray(explanation.probabilities)[idx]  # (n, K)
    explained = explanation.explained_classes[idx]  # (n, K'): the class of each map, -1: none
    if explanation.classes is None and attr.shape[1] > max_classes:
        # every class explained: per image, its most probable classes, most probable first
        order = np.argsort(-probs, axis=1, kind="stable")[:, :max_classes]
        attr = np.take_along_axis(attr, order[:, :, None, None, None], axis=1)
        explained = order
    # a class table (predicted, then true where wrong) says which column is which
    prefix = ("predicted: ", "true: ") if explanation.classes is not None else ("", "")
    none = "(prediction correct)"  # no true-class map where the prediction is right
    labels = np.array(
        [
            [
                f"{prefix[min(k, 1)]}{_text(class_names[c], 12)} ({probs[i, c]:.2f})" if c >= 0 else none
                for k, c in enumerate(row)
            ]
            for i, row in enumerate(explained)
        ]
    )
    return attr, labels


def _shap():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # shap's colormap set-up, on import
        import shap  # lazily: heavy, and only this figure needs it
    return shap


def shap_image_figure(
    images: np.ndarray,
    explanation: Explanation,
    class_names: Sequence[str],
    *,
    positions: Sequence[int] | None = None,
    max_images: int = 6,
    max_classes: int = 10,
    title: str | None = None,
    width: float = 14.0,
) -> Figure:
    """shap's own image plot of one explanation: a row per image, a column per explained class
    (every class, or the predicted class and, where the prediction is wrong, the true one).

    Column titles read "class (probability)"; colours share one scale (shap's). Closed in pyplot
    (nothing is shown twice); save it with ``bbox_inches="tight"``: shap leaves wide margins.

    Parameters
    ----------
    images : numpy.ndarray
        uint8 (N, H, W, C) explained images.
    explanation : common.explanation.Explanation
        Attributions (N, K', H, W, C) for those images.
    class_names : sequence of str
        The K class names.
    positions : sequence of int, optional
        The images to show (positions among the N); default: at most ``max_images`` spread
        evenly over the N (so several classes show when the images are ordered by class).
    max_images : int
        Images shown when ``positions`` is None.
    max_classes : int
        With more classes than this, each row shows its own top ``max_classes`` classes by
        probability instead of every class.
    title : str, optional
        E.g. "PyTorch CNN, Deep SHAP".
    width : float
        Figure width in inches (shap's: wider figures are scaled down to it).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    shap = _shap()
    n = explanation.attributions.shape[0]
    idx = spread(n, max_images) if positions is None else np.asarray(positions, dtype=int)
    attr, labels = _shap_columns(explanation, idx, class_names, max_classes)
    pixels = np.asarray(images)[idx]
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32) / 255.0  # image_plot shows [0, 1] floats as they are
    # hspace="auto": tight layout, so a row's class titles do not run into the row above
    shap.image_plot(
        to_image_plot_lists(attr), pixel_values=pixels, labels=labels, width=width, hspace="auto", show=False
    )
    fig = plt.gcf()
    plt.close(fig)  # out of pyplot's list of open figures; the Figure itself stays usable
    _finish(fig, idx, attr.shape[1] + 1, title)
    return fig


def _finish(fig: Figure, positions: np.ndarray, ncols: int, title: str | None) -> None:
    """shap's figure with each row titled by its image's number, the colour bar moved up to just
    below the last row (shap sizes its figure a row taller for it and leaves that row empty), and
    ``title`` above (the tight bounding box of the saved PNG makes room for it)."""
    *grid, colorbar = fig.axes
    for row, position in enumerate(positions):
        grid[row * ncols].set_title(f"image {int(position)}", fontsize=10)
    bottom = min(ax.get_position().y0 for ax in grid)
    box = colorbar.get_position()
    y0 = bottom - COLORBAR_GAP / fig.get_figheight() - box.height
    colorbar.set_position([box.x0, y0, box.width, box.height])
    if title:
        fig.text(0.5, 1.0, _text(title, 80), ha="center", va="bottom", fontsize=13)
