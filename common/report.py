"""The study's report: figures from saved arrays, then report.md and report.html from metrics.

``build_figures`` draws every PNG under ``<out>/figures/``; ``write_reports`` renders
the two Jinja2 templates in ``common/templates`` from the typed results
(:class:`common.results.StudyMetrics`, what ``metrics.json`` holds) and those PNGs.
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from common import registry
from common.arm import Explanation
from common.io import write_text_atomic
from common.results import SCHEMA_VERSION, Estimate, QualitySummary, StudyMetrics
from common.seeds_report import seeds_context

TEMPLATES = Path(__file__).resolve().parent / "templates"

SPLITS = ("train", "val", "test")
MAX_SKIPPED_LISTED = 50  # longer lists are cut, with a count of the rest


# ---------------------------------------------------------------- figures


def _model_title(name: str) -> str:
    """An arm name (pytorch_cnn) as its title (PyTorch CNN); names of unregistered arms as given."""
    try:
        return registry.arm_by_name(name).title
    except KeyError:
        return name


def _explanation_order(key: tuple[str, str]) -> tuple:
    """Report order: registry order of arms, then of methods; unknown keys last."""
    arm, method = key
    arms, methods = list(registry.ARMS), list(registry.METHODS)
    return (
        arms.index(arm) if arm in arms else len(arms),
        arm,
        methods.index(method) if method in methods else len(methods),
        method,
    )


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
    # matplotlib and scikit-learn's plotting (1 s to import) load here, not with this module:
    # the benchmark renders its Markdown with this module's Jinja2 environment and draws nothing.
    from common.plotting import (
        plot_attribution_grid,
        plot_confusion_matrices,
        plot_quality_curves,
        plot_shap_image,
        plot_training_curves,
    )

    out_dir = Path(out_dir)
    figures: dict[str, str] = {}

    def target(key: str) -> Path:
        figures[key] = f"figures/{key}.png"
        return out_dir / figures[key]

    histories = {_model_title(k): m.history for k, m in metrics.models.items() if m.history}
    if histories:
        plot_training_curves(histories, target("training_curves"))
    matrices = {_model_title(k): m.confusion_matrix for k, m in metrics.models.items() if m.confusion_matrix}
    if matrices:
        plot_confusion_matrices(matrices, class_names, target("confusion_matrices"))

    ordered = sorted(explanations, key=_explanation_order)
    if ordered and images is not None and true_labels is not None:
        columns = {registry.map_title(arm, method): explanations[(arm, method)] for arm, method in ordered}
        plot_attribution_grid(images, true_labels, class_names, columns, target("attribution_grid"))
        for arm, method in ordered:
            plot_shap_image(
                images,
                explanations[(arm, method)],
                class_names,
                target(f"shap_{arm}_{method}"),
                max_images=max_shap_images,
                title=_shap_title(arm, method),
            )
    if metrics.quality is not None and metrics.quality.arms:
        plot_quality_curves(_quality_curves(metrics.quality), target("quality_curves"))
    return figures


def _quality_curves(quality: QualitySummary) -> dict[str, dict]:
    """The assess stage's mean curves as :func:`plot_quality_curves` takes them, titled for display."""
    curves = {}
    for name, aq in quality.arms.items():
        arm = _arm_key(name)
        curves[_model_title(name)] = {
            "fractions": aq.fractions,
            "chance": aq.chance,
            "random": {"deletion": aq.random.deletion_curve, "insertion": aq.random.insertion_curve},
            "methods": {
                _method_title(method): {"deletion": mq.deletion_curve, "insertion": mq.insertion_curve}
                for method, mq in sorted(aq.methods.items(), key=lambda kv: _explanation_order((arm, kv[0])))
            },
        }
    return curves


def _arm_key(name: str) -> str:
    """An arm name (pytorch_cnn) as its key (pytorch); names of unregistered arms as given."""
    try:
        return registry.arm_by_name(name).key
    except KeyError:
        return name


def _method_title(key: str) -> str:
    """ "deep" -> "Deep SHAP"; unregistered methods as given."""
    return registry.METHODS[key].title if key in registry.METHODS else key


def _shap_title(arm: str, method: str) -> str:
    arm_title = registry.ARMS[arm].title if arm in registry.ARMS else arm
    method_title = _method_title(method)
    return f"{arm_title}, {method_title}"


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


def _fmt_estimate(e: Estimate | None, spec: str = ".3f") -> _Verbatim:
    """A mean with its 95% interval: "0.109 [0.092, 0.125]"; "—" when undefined."""
    if e is None or not _is_number(e.mean):
        return _Verbatim("—")
    low, high = (e.ci95 + [None, None])[:2]
    return _Verbatim(f"{_fmt(e.mean, spec)} [{_fmt(low, spec)}, {_fmt(high, spec)}]")


def _code_block(text: str, lang: str) -> _Verbatim:
    """A fenced Markdown code block whose fence is longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return _Verbatim(f"{fence}{lang}\n{text}\n{fence}")


# ---------------------------------------------------------------- context


def _comparison_verdict(p: Any) -> str:
    if not _is_number(p):
        return "The test could not be computed."
    if p < 0.05:
        return "The two models' test accuracies differ significantly at the 5% level."
    return "No significant difference between the two models' test accuracies at the 5% level."


def _map_pair_title(pair: str) -> str:
    """ "pytorch_deep~keras_deep" -> "PyTorch Deep SHAP vs Keras Deep SHAP"."""
    return " vs ".join(_map_label_title(label) for label in pair.split("~", 1))


def _map_label_title(label: str) -> str:
    parts = registry.split_map_label(label)
    return registry.map_title(*parts) if parts else label


def _schema_note(version: int) -> str | None:
    if version == SCHEMA_VERSION:
        return None
    when = "an older" if version < SCHEMA_VERSION else "a newer"
    return (
        f"This report was built from a metrics.json of schema version {version}, written by {when} version of "
        f"the study (this code writes version {SCHEMA_VERSION}); figures it lacks are shown as —. Rerun the "
        "study to regenerate it."
    )


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


FIGURE_CAPTIONS = {
    "training_curves": "Training curves: loss and accuracy per epoch, train and validation",
    "confusion_matrices": "Test confusion matrices (rows: true class, columns: predicted class)",
    "attribution_grid": "Attribution maps: each model's map for its own predicted class, one colour scale per row",
    "quality_curves": (
        "Deletion and insertion curves: mean probability of the explained class as the top-ranked pixels are "
        "removed or inserted; dashed grey: random pixel order; dotted: chance"
    ),
}

# The assess settings in the order the report lists them, with their labels; other keys follow as given.
QUALITY_SETTINGS = {
    "steps": "Steps per curve",
    "random_orders": "Random pixel orders per image (the baseline)",
    "deletion_fill": "Deletion fills removed pixels with",
    "insertion_baseline": "Insertion starts from",
    "explained_class": "Explained class",
    "n_sanity": "Images of the sanity checks (randomisation, random logit, noise floor, cross-check)",
    "randomisation_rule": "Randomisation",
    "randomised_scopes": "Randomised scopes",
    "random_logit": "Random-logit check",
    "sanity_threshold": "A sanity check fails when the mean Spearman ρ stays above",
    "cross_check": "Cross-check against an independent library",
}


def _setting_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k} ({v})" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _quality_context(metrics: StudyMetrics) -> dict[str, Any] | None:
    """The attribution-quality section: settings, one row per model x method, tests, findings."""
    quality = metrics.quality
    if quality is None:
        return None
    settings = quality.settings
    keys = [k for k in QUALITY_SETTINGS if k in settings] + [k for k in settings if k not in QUALITY_SETTINGS]
    scopes = list(settings.get("randomised_scopes") or {})
    for aq in quality.arms.values():
        for mq in aq.methods.values():
            scopes += [s for s in mq.randomisation if s not in scopes]
    models = []
    for name, aq in quality.arms.items():
        arm = _arm_key(name)
        explained = metrics.attributions.get(name, {})
        methods = []
        for method, mq in sorted(aq.methods.items(), key=lambda kv: _explanation_order((arm, kv[0]))):
            spec = registry.METHODS.get(method)
            baseline = bool(spec and spec.baseline)
            methods.append(
                {
                    "title": _method_title(method) + (" (baseline)" if baseline else ""),
                    "q": mq,
                    "additivity": None if baseline else explained.get(method),
                    "randomisation": [mq.randomisation.get(scope) for scope in scopes],
                }
            )
        tests = [(" vs ".join(_method_title(k) for k in pair.split("~", 1)), t) for pair, t in aq.method_tests.items()]
        models.append({"title": _model_title(name), "q": aq, "methods": methods, "tests": tests})
    return {
        "settings": [(QUALITY_SETTINGS.get(k, k), _setting_text(settings[k])) for k in keys],
        "threshold": settings.get("sanity_threshold"),
        "scopes": scopes,
        "models": models,
        "findings": list(quality.findings),
    }


def _context(out_dir: Path, metrics: StudyMetrics, figures: Mapping[str, str], embed: bool) -> dict[str, Any]:
    """The typed results and what the templates cannot derive themselves (titles, figures)."""
    explain = metrics.config.get("explain") or {}
    output = explain.get("output") or next(
        (a.output for by in metrics.attributions.values() for a in by.values()), "logits"
    )
    model_titles = [_model_title(k) for k in metrics.models]
    shap_figures = []
    for key in figures:
        if key.startswith("shap_"):
            arm, _, method = key[len("shap_") :].partition("_")
            caption = f"{_shap_title(arm, method)}: shap.image_plot (red raises the class score, blue lowers it)"
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
        "schema_note": _schema_note(metrics.schema_version),
        "m": metrics,
        "models": [(_model_title(k), e) for k, e in metrics.models.items()],
        "model_titles": model_titles,
        "comparison": comparison,
        "comparison_titles": [
            registry.ARMS[a].framework if a in registry.ARMS else a
            for a in ((comparison.arm_a, comparison.arm_b) if comparison else ())
        ],
        "verdict": _comparison_verdict(comparison.mcnemar_p) if comparison else None,
        "splits": [s for s in SPLITS if s in dataset.counts] + [s for s in dataset.counts if s not in SPLITS],
        "skipped": dataset.skipped[:MAX_SKIPPED_LISTED],
        "skipped_more": max(0, len(dataset.skipped) - MAX_SKIPPED_LISTED),
        "output": output,
        "methods": ", ".join(_method_title(k) for k in explain.get("methods") or []) or "—",
        "explained_classes": (
            explain.get("classes") or "all",
            registry.CLASS_SELECTIONS.get(explain.get("classes") or "all", str(explain.get("classes"))),
        ),
        "explainers": [
            (_model_title(name), _method_title(k), a)
            for name, by_method in metrics.attributions.items()
            for k, a in by_method.items()
        ],
        "config_json": config_json,
        "config_block": _code_block(config_json, "json"),
        "fig": {key: _figure(out_dir, figures, key, caption, embed) for key, caption in FIGURE_CAPTIONS.items()},
        "shap_figures": shap_figures,
        "quality": _quality_context(metrics),
        "seeds": seeds_context(metrics),
    }


def _code_span(text: Any) -> _Verbatim:
    """Inline Markdown code whose backtick fence is longer than any backtick run inside (— for None)."""
    if text is None:
        return _Verbatim("—")
    text = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return _Verbatim(f"{fence}{pad}{text}{pad}{fence}")


def _environment(html: bool, templates: str | Path = TEMPLATES) -> Environment:
    common = dict(
        loader=FileSystemLoader(str(templates)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    if html:
        env = Environment(autoescape=True, **common)
    else:
        env = Environment(autoescape=False, finalize=_md_escape, **common)
        env.filters["verbatim"] = _Verbatim  # for macro output, whose values are escaped already
        env.filters["code"] = _code_span
    env.filters["num"] = _fmt
    env.filters["pval"] = _fmt_p
    env.filters["estimate"] = _fmt_estimate
    env.filters["dash"] = lambda v: "—" if v is None else v
    env.filters["pair_title"] = _map_pair_title
    return env


def markdown_environment(templates: str | Path) -> Environment:
    """The report's Markdown environment for the templates in another folder (the benchmark's):
    every ``{{ value }}`` escaped for Markdown, and the filters ``num``, ``pval``, ``dash``,
    ``code`` (an inline code span) and ``verbatim`` (text already safe for Markdown)."""
    return _environment(html=False, templates=templates)


def verbatim(text: str) -> str:
    """``text`` marked as safe Markdown, so the Markdown environment prints it unescaped."""
    return _Verbatim(text)


def write_reports(out_dir: str | Path, metrics: StudyMetrics, figures: Mapping[str, str]) -> tuple[Path, Path]:
    """Render ``<out_dir>/report.md`` and the self-contained ``<out_dir>/report.html``.

    Args:
        out_dir: the run's output folder (the figures' paths are relative to it).
        metrics: the run's typed results (what metrics.json holds).
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
