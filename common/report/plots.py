"""The study's figures, drawn with matplotlib from saved NumPy data.

Every function here returns one ``matplotlib.figure.Figure`` (no pyplot state, so a notebook
that shows one keeps no hidden figure); :func:`save_figure` writes one as a PNG atomically.
:mod:`common.report.figures` chooses which figures a report holds and what each shows, and
:mod:`common.report.shap_plot` draws shap's own image plot.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI, **savefig_kw) -> Path:
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


def training_curves_figure(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Loss (top row) and accuracy (bottom row) per epoch, train and validation, one
    column per model. A dotted line marks each model's epoch with the lowest validation loss.

    Parameters
    ----------
    histories : mapping
        ``{model name: {"train_loss", "train_accuracy", "val_loss", "val_accuracy": one value
        per epoch}}``; missing keys are skipped.

    Returns
    -------
    matplotlib.figure.Figure
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
    return fig


def confusion_matrices_figure(matrices: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str]) -> Figure:
    """The models' test confusion matrices side by side (rows = true class).

    Parameters
    ----------
    matrices : mapping
        ``{model name: K x K counts}``, rows and columns in the order of ``class_names``.
    class_names : sequence of str
        The K class names (long ones are truncated on the axes).

    Returns
    -------
    matplotlib.figure.Figure
    """
    k = len(class_names)
    n = max(len(matrices), 1)
    side = max(4.0, 0.45 * k + 2.0)
    # "compressed": constrained layout for fixed-aspect axes. Plain "constrained" sizes the square
    # matrices to the figure's full height and leaves no room for the titles and the axis labels
    # (the report showed them cut at the top and bottom edges).
    fig = Figure(figsize=(side * n, side + 0.5), layout="compressed")
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
    return fig


def _grey(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image as (H, W) luminance, 0..255."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return image
    if image.shape[-1] >= 3:
        return image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return image[..., 0]


def _grid_row(
    fig: Figure,
    axes: np.ndarray,
    image: np.ndarray,
    true: int,
    number: int,
    i: int,
    class_names: Sequence[str],
    columns: Mapping[str, Explanation],
) -> None:
    """Row ``i`` of the attribution grid: the image, each column's map on one colour scale, its colour bar."""
    extent = (0, 1, 1, 0)  # image and map share the axes even when their resolutions differ
    true_name = _text(class_names[true], 18)
    pixels, kw = _pixels(image)
    axes[0].imshow(pixels, **kw)  # default interpolation: crisp when enlarged, smoothed when shrunk
    axes[0].set_title(f"image {number}\ntrue: {true_name}", fontsize=9)
    preds = [int(np.argmax(ex.probabilities[i])) for ex in columns.values()]
    maps = [
        channel_sum(ex.maps_for(np.argmax(ex.probabilities, axis=1))[i])
        for ex in columns.values()  # each model's map of the class it predicted
    ]
    m = max((float(np.nanmax(np.abs(s))) for s in maps if s.size), default=0.0)
    m = m if np.isfinite(m) and m > 0 else 1.0  # all-zero maps still get a valid scale
    grey = _grey(image)
    im = None
    for j, (title, ex) in enumerate(columns.items(), start=1):
        ax, pred = axes[j], preds[j - 1]
        # the image in reduced contrast (black -> dark grey, white -> light grey), the map translucent on top
        ax.imshow(grey, cmap="gray", vmin=-160, vmax=415, extent=extent)
        im = ax.imshow(maps[j - 1], cmap=MAP_CMAP, vmin=-m, vmax=m, alpha=0.7, extent=extent)
        ax.set_title(
            f"{_text(title, 24)}\ntrue: {true_name}\npred: {_text(class_names[pred], 14)} "
            f"({float(ex.probabilities[i, pred]):.2f})",
            fontsize=8,
            color="tab:red" if pred != true else "black",
        )
    if im is not None:
        cbar = fig.colorbar(im, ax=list(axes[1:]), fraction=0.03, pad=0.02, aspect=12)
        cbar.ax.tick_params(labelsize=6)
        cbar.ax.yaxis.get_offset_text().set_fontsize(6)


def attribution_grid_figure(
    images: np.ndarray,
    true_labels: Sequence[int],
    class_names: Sequence[str],
    columns: Mapping[str, Explanation],
    numbers: Sequence[int] | None = None,
) -> Figure:
    """One row per explained image: the image, then each explanation's map over a grey copy of it.

    Each map is the channel-summed attribution for the class *that column's model* predicted
    (argmax of its probabilities), in a diverging colour map over a faint grey copy of its image.
    The maps of one row share one symmetric colour scale (``-max|map| .. +max|map|`` over the
    row's maps) and one colour bar, so a row's maps compare in strength as well as in pattern. A
    red title marks a wrong prediction.

    Parameters
    ----------
    images : numpy.ndarray
        uint8 (N, H, W, C) explained images.
    true_labels : sequence of int
        (N,) true class per image.
    class_names : sequence of str
        The K class names.
    columns : mapping
        ``{column title: Explanation over the same N images}``, in display order.
    numbers : sequence of int, optional
        Each row's image number in its title (default ``0 .. N-1``): its position among the
        study's explained images when the rows are a choice of them.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        An explanation does not cover the N images.
    """
    images = np.asarray(images)
    true_labels = np.asarray(true_labels).astype(int).ravel()
    n = images.shape[0]
    numbers = list(range(n)) if numbers is None else [int(i) for i in numbers]
    for title, ex in columns.items():
        if ex.attributions.shape[0] != n:
            raise ValueError(f"{title}: explains {ex.attributions.shape[0]} images, grid has {n}")
    ncols = 1 + len(columns)
    fig = Figure(figsize=(2.3 * ncols + 0.6, 2.35 * n + 0.2), layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        _grid_row(fig, axes[i], images[i], int(true_labels[i]), numbers[i], i, class_names, columns)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def quality_curves_figure(curves: Mapping[str, Mapping]) -> Figure:
    """Deletion (left) and insertion (right) curves, one row per model; the random pixel order
    dashed grey, chance a dotted line.

    Parameters
    ----------
    curves : mapping
        ``{model title: {"fractions": [...], "chance": 1/K, "random": {"deletion": [...],
        "insertion": [...]}, "methods": {method title: {"deletion": [...], "insertion": [...]}}}}``;
        each curve is the mean probability of the explained class at each fraction.

    Returns
    -------
    matplotlib.figure.Figure
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
    return fig
