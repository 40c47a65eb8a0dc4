"""The study's figures, drawn with matplotlib's Agg backend from saved NumPy data.

Every function writes one PNG atomically and returns its path. Figures are built as
``matplotlib.figure.Figure`` objects (no pyplot state), except the shap image plot,
which shap draws through pyplot; that figure is closed after saving.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless, and the same rendering everywhere

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay

from common.explanation import Explanation, channel_sum
from common.io import atomic_path

DPI = 80  # small files: the HTML report embeds every PNG
MAP_CMAP = "coolwarm"  # diverging: blue lowers the explained score, red raises it


def _text(value: object, width: int | None = None) -> str:
    """A user string made safe for a matplotlib title: one line, at most ``width``
    characters (ellipsis), and ``$`` escaped so it is not read as mathtext."""
    s = " ".join(str(value).split())
    if width is not None and len(s) > width:
        s = s[: width - 1] + "…"
    return s.replace("$", r"\$")


def _save(fig: Figure, path: str | Path, dpi: int = DPI, **savefig_kw) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically.

    The figures have opaque white backgrounds, so the PNG is stored as RGB (no alpha
    channel): about 12% smaller, which matters because the HTML report embeds every figure.
    Pillow's ``optimize`` would save another 2-3% at 5-7 times the encoding time (1 s for the
    default study's attribution grid alone), so it is not used.

    Without ``savefig_kw`` the figure is drawn once on an Agg canvas and its pixels saved:
    the same pixels as ``savefig`` gives, in 60% of the time, as ``savefig`` draws a figure
    with a layout engine twice (once to lay it out, once to render) and encodes a PNG that is
    then decoded again here. With ``savefig_kw`` (e.g. ``bbox_inches="tight"``, which can
    grow the image past the figure's edges) it is ``savefig``.
    """
    path = Path(path)
    if savefig_kw:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", **savefig_kw)
        buffer.seek(0)
        with Image.open(buffer) as png:
            image = png.convert("RGB")
    else:
        fig.set_dpi(dpi)
        fig.set_facecolor("white")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _pixels(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """An (H, W, C) uint8 image and the imshow arguments that show it as it is."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0], {"cmap": "gray", "vmin": 0, "vmax": 255}
    return image, {}


def plot_training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path) -> Path:
    """Loss (top row) and accuracy (bottom row) per epoch, train and validation, one
    column per model.

    Args:
        histories: ``{model name: {"train_loss", "train_accuracy", "val_loss",
            "val_accuracy": one value per epoch}}``; missing keys are skipped.
        path: PNG to write.

    Returns:
        ``path``. A dotted line marks each model's epoch with the lowest validation loss.
    """
    n = max(len(histories), 1)
    fig = Figure(figsize=(5.0 * n, 6.0), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, sharex="col")
    if not histories:
        axes[0, 0].text(0.5, 0.5, "no training history", ha="center", va="center")
    for col, (name, history) in enumerate(histories.items()):
        for row, quantity in enumerate(("loss", "accuracy")):
            ax = axes[row, col]
            for split, style in (("train", "-o"), ("val", "--s")):
                values = history.get(f"{split}_{quantity}") or []
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3, label=f"{split}")
            val_loss = history.get("val_loss") or []
            if len(val_loss):
                best = int(np.nanargmin(val_loss)) + 1
                ax.axvline(best, color="grey", linestyle=":", linewidth=1, label="lowest val loss")
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0, col].set_title(_text(name, 40))
        axes[1, col].set_xlabel("epoch")
        axes[1, col].xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)
    return Path(path)


def plot_confusion_matrices(
    matrices: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str], path: str | Path
) -> Path:
    """The models' test confusion matrices side by side (rows = true class).

    Args:
        matrices: ``{model name: K x K counts}``.
        class_names: the K class names (long ones are truncated on the axes).
        path: PNG to write.
    """
    k = len(class_names)
    n = max(len(matrices), 1)
    side = max(4.0, 0.45 * k + 2.0)
    fig = Figure(figsize=(side * n, side), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    names = [_text(c, 12) for c in class_names]
    rotate = 45 if max((len(c) for c in names), default=0) > 3 else "horizontal"
    for ax, (model, matrix) in zip(axes, matrices.items(), strict=False):
        display = ConfusionMatrixDisplay(np.asarray(matrix, dtype=int), display_labels=names)
        display.plot(
            ax=ax, cmap="Blues", colorbar=False, values_format="d", include_values=k <= 25, xticks_rotation=rotate
        )
        if rotate != "horizontal":
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")  # the label's end sits under its column
        ax.set_title(_text(model, 40))
    if not matrices:
        axes[0].text(0.5, 0.5, "no confusion matrix", ha="center", va="center")
    _save(fig, path)
    return Path(path)


def _grey(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image as (H, W) luminance, 0..255."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return image
    if image.shape[-1] >= 3:
        return image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return image[..., 0]


def attribution_grid_figure(
    images: np.ndarray,
    true_labels: Sequence[int],
    class_names: Sequence[str],
    columns: Mapping[str, Explanation],
) -> Figure:
    """The figure :func:`plot_attribution_grid` saves (its arguments but ``path``).

    Each map is drawn in a diverging colour map over a faint grey copy of its image. All maps
    of one row share one symmetric colour scale (``±max|map|`` over the row's maps) and one
    colour bar at the row's end.
    """
    images = np.asarray(images)
    true_labels = np.asarray(true_labels).astype(int).ravel()
    n = images.shape[0]
    for title, ex in columns.items():
        if ex.attributions.shape[0] != n:
            raise ValueError(f"{title}: explains {ex.attributions.shape[0]} images, grid has {n}")
    ncols = 1 + len(columns)
    fig = Figure(figsize=(2.3 * ncols + 0.6, 2.35 * n + 0.2), layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    extent = (0, 1, 1, 0)  # image and map share the axes even when their resolutions differ
    for i in range(n):
        true_name = _text(class_names[true_labels[i]], 18)
        pixels, kw = _pixels(images[i])
        axes[i, 0].imshow(pixels, **kw)  # default interpolation: crisp when enlarged, smoothed when shrunk
        axes[i, 0].set_title(f"image {i + 1}\ntrue: {true_name}", fontsize=9)
        preds = [int(np.argmax(ex.probabilities[i])) for ex in columns.values()]
        maps = [
            channel_sum(ex.maps_for(np.argmax(ex.probabilities, axis=1))[i])
            for ex in columns.values()  # each model's map of the class it predicted
        ]
        m = max((float(np.nanmax(np.abs(s))) for s in maps if s.size), default=0.0)
        m = m if np.isfinite(m) and m > 0 else 1.0  # all-zero maps still get a valid scale
        grey = _grey(images[i])
        im = None
        for j, (title, ex) in enumerate(columns.items(), start=1):
            ax, pred = axes[i, j], preds[j - 1]
            # the image in reduced contrast (black -> dark grey, white -> light grey), the map translucent on top
            ax.imshow(grey, cmap="gray", vmin=-160, vmax=415, extent=extent)
            im = ax.imshow(maps[j - 1], cmap=MAP_CMAP, vmin=-m, vmax=m, alpha=0.7, extent=extent)
            wrong = pred != true_labels[i]
            ax.set_title(
                f"{_text(title, 24)}\ntrue: {true_name}\npred: {_text(class_names[pred], 14)} "
                f"({float(ex.probabilities[i, pred]):.2f})",
                fontsize=8,
                color="tab:red" if wrong else "black",
            )
        if im is not None:
            cbar = fig.colorbar(im, ax=list(axes[i, 1:]), fraction=0.03, pad=0.02, aspect=12)
            cbar.ax.tick_params(labelsize=6)
            cbar.ax.yaxis.get_offset_text().set_fontsize(6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_attribution_grid(
    images: np.ndarray,
    true_labels: Sequence[int],
    class_names: Sequence[str],
    columns: Mapping[str, Explanation],
    path: str | Path,
) -> Path:
    """One row per explained image: the image, then each explanation's map over a grey copy of it.

    Each map is the channel-summed attribution for the class *that column's model*
    predicted (argmax of its probabilities). The maps of one row share one symmetric colour
    scale (``-max|map| .. +max|map|`` over the row's maps) and one colour bar, so a row's
    maps compare in strength as well as in pattern. A red title marks a wrong prediction.

    Args:
        images: uint8 (N, H, W, C) explained images.
        true_labels: (N,) true class per image.
        class_names: the K class names.
        columns: ``{column title: Explanation over the same N images}``, in display order.
        path: PNG to write.

    Raises:
        ValueError: when an explanation does not cover the N images.
    """
    _save(attribution_grid_figure(images, true_labels, class_names, columns), path)
    return Path(path)


def plot_quality_curves(curves: Mapping[str, Mapping], path: str | Path) -> Path:
    """Deletion (left) and insertion (right) curves, one row per model.

    Args:
        curves: ``{model title: {"fractions": [...], "chance": 1/K, "random": {"deletion": [...],
            "insertion": [...]}, "methods": {method title: {"deletion": [...], "insertion": [...]}}}}``;
            each curve is the mean probability of the explained class at each fraction.
        path: PNG to write.

    Returns:
        ``path``. The random pixel order is dashed grey, chance a dotted line.
    """
    n = max(len(curves), 1)
    fig = Figure(figsize=(10.0, 3.2 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    if not curves:
        axes[0, 0].text(0.5, 0.5, "no quality curves", ha="center", va="center")
    for row, (model, c) in enumerate(curves.items()):
        x = np.asarray(c["fractions"], dtype=float)
        for col, kind in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            for title, method in c["methods"].items():
                ax.plot(x, method[kind], "-o", markersize=3, label=_text(title, 40))
            ax.plot(x, c["random"][kind], "--", color="grey", label="random order")
            ax.axhline(c["chance"], color="black", linestyle=":", linewidth=1, label="chance")
            ax.set_title(f"{_text(model, 40)}: {kind}", fontsize=10)
            ax.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}")
            ax.set_ylabel("probability of explained class")
            ax.set_xlim(0, 1)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[row, 1].legend(fontsize=7, loc="best")
    _save(fig, path)
    return Path(path)


def to_image_plot_lists(attributions: np.ndarray) -> list[np.ndarray]:
    """(N, K, H, W, C) -> list of K arrays of shape (N, H, W, C), as shap.image_plot expects.

    shap.image_plot handed the 5-D array itself silently plots the sum over classes.
    """
    attributions = np.asarray(attributions)
    if attributions.ndim != 5:
        raise ValueError(f"expected attributions of shape (N, K, H, W, C), got {attributions.shape}")
    return [attributions[:, k] for k in range(attributions.shape[1])]


def _spread(n: int, k: int) -> np.ndarray:
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


def plot_shap_image(
    images: np.ndarray,
    explanation: Explanation,
    class_names: Sequence[str],
    path: str | Path,
    max_images: int = 6,
    max_classes: int = 10,
    title: str | None = None,
    width: float = 14.0,
    dpi: int = 80,
) -> Path:
    """shap's own image plot of one explanation: a row per image, a column per explained class
    (every class, or the predicted class and, where the prediction is wrong, the true one).

    Args:
        images: uint8 (N, H, W, C) explained images.
        explanation: attributions (N, K, H, W, C) for those images.
        class_names: the K class names.
        path: PNG to write.
        max_images: at most this many images, spread evenly over the N (so several
            classes show when the images are ordered by class).
        max_classes: with more classes than this, each row shows its own top
            ``max_classes`` classes by probability instead of every class.
        title: figure title, e.g. "PyTorch CNN, Deep SHAP".
        width: figure width in inches (shap's ``width``: wider figures are scaled down to it).
        dpi: resolution of the PNG.

    Column titles read "class (probability)". Colours share one scale per row (shap's).
    """
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # shap's colormap set-up, on import
        import shap  # lazily: heavy, and only this figure needs it

    idx = _spread(explanation.attributions.shape[0], max_images)
    attr, labels = _shap_columns(explanation, idx, class_names, max_classes)
    pixels = np.asarray(images)[idx]
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32) / 255.0  # image_plot shows [0, 1] floats as they are
    # hspace="auto": tight layout, so a row's class titles do not run into the row above
    shap.image_plot(
        to_image_plot_lists(attr), pixel_values=pixels, labels=labels, width=width, hspace="auto", show=False
    )
    fig = plt.gcf()
    try:
        if title:  # above the laid-out axes; the tight bounding box below makes room for it
            fig.text(0.5, 1.0, _text(title, 80), ha="center", va="bottom", fontsize=13)
        _save(fig, path, dpi=dpi, bbox_inches="tight")  # shap leaves wide empty margins
    finally:
        plt.close(fig)
    return Path(path)
