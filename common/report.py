"""The study's report: figures from saved arrays, then report.md and report.html from metrics.

``build_figures`` draws every PNG under ``<out>/figures/``; ``write_reports`` renders
the two Jinja2 templates in ``common/templates`` from ``metrics.json`` and those PNGs.
The Markdown report links the PNGs relatively (it reads well on GitHub); the HTML
report is one self-contained file with the PNGs embedded as base64 data URIs.

Reports hold no date and no absolute output path: the same inputs give the same
report, apart from the measured timings. Every string that comes from the user (class
names, paths, the data set name) is escaped: by Jinja2's autoescape in HTML, by
:func:`_md_escape` in Markdown.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from common.arm import Explanation
from common.io import write_text_atomic
from common.plotting import (
    plot_attribution_grid,
    plot_confusion_matrices,
    plot_shap_image,
    plot_training_curves,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"

ARMS = ("pytorch", "keras")
METHODS = ("deep", "gradient")
ARM_MODEL = {"pytorch": "pytorch_cnn", "keras": "keras_resnet50"}  # arm label -> metrics key
MODEL_NAMES = {"pytorch_cnn": "PyTorch CNN", "keras_resnet50": "Keras ResNet50"}
ARM_NAMES = {"pytorch": "PyTorch", "keras": "Keras"}
METHOD_NAMES = {"deep": "Deep SHAP", "gradient": "Gradient SHAP"}
SPLITS = ("train", "val", "test")
MAX_SKIPPED_LISTED = 50  # longer lists are cut, with a count of the rest


# ---------------------------------------------------------------- figures


def _model_name(key: str) -> str:
    return MODEL_NAMES.get(key, key)


def _map_name(arm: str, method: str) -> str:
    """Display name of one map, e.g. "PyTorch Deep SHAP"."""
    return f"{ARM_NAMES.get(arm, arm)} {METHOD_NAMES.get(method, method)}"


def _explanation_order(key: tuple[str, str]) -> tuple:
    """Report order: PyTorch before Keras, Deep before Gradient, unknown labels last."""
    arm, method = key
    return (
        ARMS.index(arm) if arm in ARMS else len(ARMS),
        arm,
        METHODS.index(method) if method in METHODS else len(METHODS),
        method,
    )


def build_figures(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    images: np.ndarray | None,
    true_labels: Sequence[int] | None,
    class_names: Sequence[str],
    explanations: Mapping[tuple[str, str], Explanation],
    max_shap_images: int = 6,
) -> dict[str, str]:
    """Draw every figure of the report under ``<out_dir>/figures/``.

    Args:
        out_dir: the run's output folder.
        metrics: the run's metrics (``models.*.history`` and ``confusion_matrix`` are used).
        images: uint8 (N, H, W, C) explained test images (None when nothing was explained).
        true_labels: (N,) their true classes.
        class_names: the K class names.
        explanations: ``{(arm, method): Explanation}``, arm "pytorch"/"keras", method
            "deep"/"gradient"; any subset, all over the same N images.
        max_shap_images: images per shap.image_plot figure.

    Returns:
        ``{figure key: path relative to out_dir}``, e.g. ``{"training_curves":
        "figures/training_curves.png", "shap_pytorch_deep": "figures/shap_pytorch_deep.png"}``;
        figures without data (no history, no explanation) are left out.
    """
    out_dir = Path(out_dir)
    figures: dict[str, str] = {}

    def target(key: str) -> Path:
        figures[key] = f"figures/{key}.png"
        return out_dir / figures[key]

    models = metrics.get("models") or {}
    histories = {_model_name(k): m["history"] for k, m in models.items() if m.get("history")}
    if histories:
        plot_training_curves(histories, target("training_curves"))
    matrices = {_model_name(k): m["confusion_matrix"] for k, m in models.items() if m.get("confusion_matrix")}
    if matrices:
        plot_confusion_matrices(matrices, class_names, target("confusion_matrices"))

    ordered = sorted(explanations, key=_explanation_order)
    if ordered and images is not None and true_labels is not None:
        columns = {_map_name(arm, method): explanations[(arm, method)] for arm, method in ordered}
        plot_attribution_grid(images, true_labels, class_names, columns, target("attribution_grid"))
        for arm, method in ordered:
            title = f"{_model_name(ARM_MODEL.get(arm, arm))}, {METHOD_NAMES.get(method, method)}"
            plot_shap_image(
                images,
                explanations[(arm, method)],
                class_names,
                target(f"shap_{arm}_{method}"),
                max_images=max_shap_images,
                title=title,
            )
    return figures


# ---------------------------------------------------------------- formatting


class _Verbatim(str):
    """Text already safe for Markdown: a link target, a fenced code block, our own numbers."""


# Markdown's active characters; "_" only at a word edge (GitHub ignores intraword "_"),
# "&" only where it would start an entity such as "&lt;".
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|&(?=#?\w+;))")


def _md_escape(value: Any) -> str:
    """Finalizer of the Markdown environment: every ``{{ value }}`` is printed on one line
    with Markdown's special characters backslash-escaped, so a class named ``*a*|<b>``
    shows as written and cannot break a table or inject HTML."""
    if isinstance(value, _Verbatim):
        return value
    if value is None:
        return ""
    text = _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    return "\\" + text if text[:1] in ("-", "+") else text


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any, spec: str) -> _Verbatim:
    """``format(x, spec)`` for finite numbers, an em dash for missing or undefined values
    (our own text, so the Markdown escaper leaves its "-" alone)."""
    return _Verbatim(format(x, spec) if _is_number(x) else "—")


def _fmt_p(p: Any) -> _Verbatim:
    """A p-value with its relation sign: "< 0.001" or "= 0.123" (the templates write "p {{ p }}")."""
    if not _is_number(p):
        return _Verbatim("= —")
    return _Verbatim("< 0.001" if p < 0.001 else f"= {p:.3f}")


def _code_block(text: str, lang: str) -> _Verbatim:
    """A fenced Markdown code block whose fence is longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return _Verbatim(f"{fence}{lang}\n{text}\n{fence}")


# ---------------------------------------------------------------- context


def _models_context(models: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, m in models.items():
        info = m.get("info") or {}
        ci = m.get("test_accuracy_ci95") or [None, None]
        backbone = m.get("backbone_weights", info.get("backbone_weights"))
        rows.append(
            {
                "key": key,
                "name": _model_name(key),
                "accuracy": _fmt(m.get("test_accuracy"), ".4f"),
                "ci": _Verbatim(f"[{_fmt(ci[0], '.4f')}, {_fmt(ci[1], '.4f')}]"),
                "train_seconds": _fmt(m.get("train_seconds"), ".1f"),
                "best_val_epoch": m.get("best_val_epoch", "—"),
                "backbone": backbone if backbone is not None else "—",
                "device": info.get("device", "—"),
            }
        )
    return rows


def _comparison_context(comparison: Mapping[str, Any] | None, models: Sequence[str]) -> dict[str, Any] | None:
    if not comparison or len(models) < 2:
        return None
    p = comparison.get("mcnemar_p")
    # The runner names the counts after the arms; mcnemar_exact's own names are the fallback.
    only_pytorch = comparison.get("only_pytorch_correct", comparison.get("only_a_correct"))
    only_keras = comparison.get("only_keras_correct", comparison.get("only_b_correct"))
    if not _is_number(p):
        verdict = "The test could not be computed."
    elif p < 0.05:
        verdict = "The two models' test accuracies differ significantly at the 5% level."
    else:
        verdict = "No significant difference between the two models' test accuracies at the 5% level."
    return {
        "p": _fmt_p(p),
        "only_pytorch": only_pytorch if only_pytorch is not None else "—",
        "only_keras": only_keras if only_keras is not None else "—",
        "both_correct": comparison.get("both_correct", "—"),
        "both_wrong": comparison.get("both_wrong", "—"),
        "n": comparison.get("n", "—"),
        "verdict": verdict,
    }


def _per_class_context(models: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any] | None:
    keyed = [(k, m.get("per_class") or {}) for k, m in models.items() if m.get("per_class")]
    if not keyed:
        return None
    names = list(class_names) or list(keyed[0][1])
    rows = []
    for name in names:
        stats = [pc.get(str(name)) or {} for _, pc in keyed]
        support = next((s["support"] for s in stats if "support" in s), "—")
        cells = [[_fmt(s.get(q), ".3f") for q in ("precision", "recall", "f1")] for s in stats]
        rows.append({"name": name, "support": support, "cells": cells})
    return {"models": [_model_name(k) for k, _ in keyed], "rows": rows}


def _agreement_context(agreement: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not agreement or not agreement.get("pairs"):
        return None
    per_image = agreement.get("per_image") or []
    counts = agreement.get("n_images") or {}
    rows = []
    for pair, rho in agreement["pairs"].items():
        a, _, b = pair.partition("~")
        n = counts.get(pair, sum(1 for row in per_image if _is_number(row.get(pair))))
        rows.append({"pair": f"{_label_name(a)} vs {_label_name(b)}", "rho": _fmt(rho, ".3f"), "n": n})
    return {"rows": rows, "method": agreement.get("method", ""), "n_images": len(per_image)}


def _label_name(label: str) -> str:
    """ "pytorch_deep" -> "PyTorch Deep SHAP"; other labels unchanged."""
    arm, _, method = label.partition("_")
    return _map_name(arm, method) if arm in ARMS and method in METHODS else label


def _explainers_context(attributions: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for model, by_method in (attributions or {}).items():
        for method, a in (by_method or {}).items():
            rows.append(
                {
                    "model": _model_name(model),
                    "method": METHOD_NAMES.get(method, method),
                    "output": a.get("output", "—"),
                    "seconds": _fmt(a.get("seconds"), ".1f"),
                    "n_images": a.get("n_images", "—"),
                    "n_background": a.get("n_background", "—"),
                    "nsamples": a.get("nsamples") if a.get("nsamples") is not None else "—",
                    "additivity": _fmt(a.get("additivity_max_abs_error"), ".1e"),
                }
            )
    return rows


def _dataset_context(dataset: Mapping[str, Any]) -> dict[str, Any]:
    classes = list(dataset.get("classes") or [])
    counts = dataset.get("counts") or {}
    splits = [s for s in SPLITS if s in counts] + [s for s in counts if s not in SPLITS]
    rows = [{"name": c, "counts": [(counts[s] or {}).get(str(c), 0) for s in splits]} for c in classes]
    totals = [sum((counts[s] or {}).values()) for s in splits]
    skipped = list(dataset.get("skipped") or [])
    return {
        "name": dataset.get("name", "unnamed"),
        "root": dataset.get("root") if dataset.get("root") is not None else "bundled (scikit-learn digits)",
        "layout": dataset.get("layout", "—"),
        "image_size": dataset.get("image_size", "—"),
        "classes": classes,
        "splits": splits,
        "rows": rows,
        "totals": totals,
        "skipped": skipped[:MAX_SKIPPED_LISTED],
        "skipped_more": max(0, len(skipped) - MAX_SKIPPED_LISTED),
        "skipped_total": len(skipped),
    }


def _figure(out_dir: Path, figures: Mapping[str, str], key: str, caption: str, embed: bool) -> dict | None:
    """One figure for a template: relative link (Markdown) or base64 data URI (HTML)."""
    rel = figures.get(key)
    if rel is None:
        return None
    fig = {"key": key, "caption": caption, "alt": caption, "path": _Verbatim(quote(rel)), "missing": False}
    if embed:
        file = out_dir / rel
        if file.is_file():
            fig["src"] = "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode("ascii")
        else:
            fig["missing"] = True
    return fig


def _context(out_dir: Path, metrics: Mapping[str, Any], figures: Mapping[str, str], embed: bool) -> dict[str, Any]:
    """Everything the two templates show, formatted once (strings and plain lists)."""
    dataset = _dataset_context(metrics.get("dataset") or {})
    models = metrics.get("models") or {}
    config = metrics.get("config") or {}
    explain = config.get("explain") or {}
    output = explain.get("output") or next(
        (a.get("output") for by in (metrics.get("attributions") or {}).values() for a in (by or {}).values()
         if a.get("output")),
        "logits",
    )
    model_names = [_model_name(k) for k in models]

    shap_figures = []
    for key in figures:
        if key.startswith("shap_"):
            arm, _, method = key[len("shap_"):].partition("_")
            shap_figures.append(
                _figure(out_dir, figures, key,
                        f"{_model_name(ARM_MODEL.get(arm, arm))}, {METHOD_NAMES.get(method, method)}: "
                        f"shap.image_plot (red raises the class score, blue lowers it)", embed)
            )
    config_json = json.dumps(config, indent=2, sort_keys=False, default=str)
    return {
        "title": f"Framework comparison on {dataset['name']}: " + (
            " vs ".join(model_names) if len(model_names) > 1 else f"{model_names[0]} only" if model_names else "no model"
        ),
        "dataset": dataset,
        "model_names": model_names,
        "models": _models_context(models),
        "fallbacks": [str(f) for f in metrics.get("fallbacks") or []],
        "comparison": _comparison_context(metrics.get("comparison"), list(models)),
        "per_class": _per_class_context(models, dataset["classes"]),
        "output": output,
        "explain": {
            "n_background": explain.get("n_background", "—"),
            "nsamples": explain.get("nsamples", "—"),
            "methods": ", ".join(METHOD_NAMES.get(m, m) for m in explain.get("methods") or []) or "—",
        },
        "agreement": _agreement_context(metrics.get("agreement")),
        "explainers": _explainers_context(metrics.get("attributions")),
        "stages": [
            {"stage": s.get("stage", "—"), "status": s.get("status", "—"), "seconds": _fmt(s.get("seconds"), ".1f")}
            for s in metrics.get("stages") or []
        ],
        "config_json": config_json,
        "config_block": _code_block(config_json, "json"),
        "versions": [(k, v if v is not None else "not installed") for k, v in (metrics.get("versions") or {}).items()],
        "fig": {
            key: _figure(out_dir, figures, key, caption, embed)
            for key, caption in (
                ("training_curves", "Training curves: loss and accuracy per epoch, train and validation"),
                ("confusion_matrices", "Test confusion matrices (rows: true class, columns: predicted class)"),
                ("attribution_grid", "Attribution maps: each model's map for its own predicted class"),
            )
        },
        "shap_figures": shap_figures,
    }


def _environment(html: bool) -> Environment:
    common = dict(loader=FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True,
                  keep_trailing_newline=True, undefined=StrictUndefined)
    if html:
        return Environment(autoescape=True, **common)
    env = Environment(autoescape=False, finalize=_md_escape, **common)
    env.filters["verbatim"] = _Verbatim  # for macro output, whose values are escaped already
    return env


def write_reports(out_dir: str | Path, metrics: Mapping[str, Any], figures: Mapping[str, str]) -> tuple[Path, Path]:
    """Render ``<out_dir>/report.md`` and the self-contained ``<out_dir>/report.html``.

    Args:
        out_dir: the run's output folder (the figures' paths are relative to it).
        metrics: the run's metrics dict (the content of metrics.json).
        figures: ``{figure key: relative path}`` from :func:`build_figures`.

    Returns:
        ``(report.md path, report.html path)``, both written atomically.
    """
    out_dir = Path(out_dir)
    md = _environment(html=False).get_template("report.md.j2").render(**_context(out_dir, metrics, figures, False))
    html = _environment(html=True).get_template("report.html.j2").render(**_context(out_dir, metrics, figures, True))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(md_path, md)
    write_text_atomic(html_path, html)
    return md_path, html_path
