"""What the report templates show: the typed results and what the templates cannot derive themselves."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common import registry
from common.report.framework import framework_context
from common.report.names import framework_title, method_title, model_title, shap_title
from common.report.quality import quality_context
from common.report.seeds import seeds_context
from common.report.text import Verbatim, code_block, is_number
from common.results import SCHEMA_VERSION, StudyMetrics

SPLITS = ("train", "val", "test")

MAX_SKIPPED_LISTED = 50  # longer lists are cut, with a count of the rest


def _comparison_verdict(p: Any) -> str:
    if not is_number(p):
        return "The test could not be computed."
    if p < 0.05:
        return "The two models' test accuracies differ significantly at the 5% level."
    return "No significant difference between the two models' test accuracies at the 5% level."


def schema_note(version: int) -> str | None:
    """What the report says at its top when its metrics.json is of another schema version than this code writes."""
    if version == SCHEMA_VERSION:
        return None
    when = "an older" if version < SCHEMA_VERSION else "a newer"
    return (
        f"This report was built from a metrics.json of schema version {version}, written by {when} version of "
        f"the study (this code writes version {SCHEMA_VERSION}); figures it lacks are shown as —. Rerun the "
        "study to regenerate it."
    )


def _png_size(png: bytes) -> tuple[int | None, int | None]:
    """A PNG's width and height in pixels, from its header (None, None for anything else)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        return None, None
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure(out_dir: Path, figures: Mapping[str, str], key: str, caption: str, embed: bool) -> dict | None:
    """One figure for a template: relative link (Markdown) or base64 data URI (HTML)."""
    rel = figures.get(key)
    if rel is None:
        return None
    fig = {
        "key": key,
        "caption": caption,
        "alt": caption,
        "path": Verbatim(quote(rel)),
        "missing": False,
        "width": None,
    }
    if embed:
        file = out_dir / rel
        if file.is_file():
            png = file.read_bytes()
            fig["src"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            fig["width"], fig["height"] = _png_size(png)  # the page keeps the figure's place while it loads
        else:
            fig["missing"] = True
    return fig


FIGURE_CAPTIONS = {
    "training_curves": "Training curves: loss and accuracy per epoch, train and validation",
    "confusion_matrices": "Test confusion matrices (rows: true class, columns: predicted class)",
    "attribution_grid": "Attribution maps: each model's map for its own predicted class, one colour scale per row",
    "quality_curves": (
        "Deletion and insertion curves: mean probability of the explained class as the top-ranked pixels are "
        "removed or inserted; dashed grey: random pixel order; dotted: chance"
    ),
}


def report_context(out_dir: Path, metrics: StudyMetrics, figures: Mapping[str, str], embed: bool) -> dict[str, Any]:
    """The typed results and what the templates cannot derive themselves (titles, figures)."""
    explain = metrics.config.get("explain") or {}
    output = explain.get("output") or next(
        (a.output for by in metrics.attributions.values() for a in by.values()), "logits"
    )
    model_titles = [model_title(k) for k in metrics.models]
    shap_figures = []
    for key in figures:
        if key.startswith("shap_"):
            arm, _, method = key[len("shap_") :].partition("_")
            caption = f"{shap_title(arm, method)}: shap.image_plot (red raises the class score, blue lowers it)"
            shap_figures.append(_figure(out_dir, figures, key, caption, embed))
    config_json = json.dumps(metrics.config, indent=2, sort_keys=False, default=str)
    comparison = metrics.comparison if len(metrics.models) >= 2 else None
    dataset = metrics.dataset
    return {
        "title": f"Framework comparison on {dataset.name}: "
        + (
            " vs ".join(model_titles)
            if len(model_titles) > 1
            else f"{model_titles[0]} only"
            if model_titles
            else "no model"
        ),
        "schema_note": schema_note(metrics.schema_version),
        "m": metrics,
        "models": [(model_title(k), e) for k, e in metrics.models.items()],
        "model_titles": model_titles,
        "comparison": comparison,
        "comparison_titles": [framework_title(a) for a in ((comparison.arm_a, comparison.arm_b) if comparison else ())],
        "comparison_verdict": _comparison_verdict(comparison.mcnemar_p) if comparison else None,
        "splits": [s for s in SPLITS if s in dataset.counts] + [s for s in dataset.counts if s not in SPLITS],
        "skipped": dataset.skipped[:MAX_SKIPPED_LISTED],
        "skipped_more": max(0, len(dataset.skipped) - MAX_SKIPPED_LISTED),
        "output": output,
        "methods": ", ".join(method_title(k) for k in explain.get("methods") or []) or "—",
        "explained_classes": (
            explain.get("classes") or "all",
            registry.CLASS_SELECTIONS.get(explain.get("classes") or "all", str(explain.get("classes"))),
        ),
        "explainers": [
            (model_title(name), method_title(k), a)
            for name, by_method in metrics.attributions.items()
            for k, a in by_method.items()
        ],
        "config_json": config_json,
        "config_block": code_block(config_json, "json"),
        "fig": {key: _figure(out_dir, figures, key, caption, embed) for key, caption in FIGURE_CAPTIONS.items()},
        "shap_figures": shap_figures,
        "quality": quality_context(metrics),
        "seeds": seeds_context(metrics),
        "framework": framework_context(metrics),
    }
