"""The report's attribution-quality parts: the "At a glance" table, and the quality section's context.

Every verdict cell is read from :class:`common.results.Verdict`: its symbol (✓ pass, ✗ fail,
"n.s." not significant, "too few images", "uninformative", — not measured), its statistic with
the interval, the Holm-corrected p-value and the images behind it, and a link to its detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common import registry
from common.report.names import arm_key, explanation_order, method_title, model_title
from common.report.text import Verbatim, fmt_estimate, fmt_number, fmt_p, is_number
from common.results import ArmQuality, StudyMetrics, Verdict

SYMBOLS = {
    "pass": "✓",
    "fail": "✗",
    "not significant": "n.s.",
    "too few images": "too few images",
    "uninformative": "uninformative",
    "not measured": "—",
}
# The columns of the "At a glance" table: (title, verdict keys combined, anchor of the detail)
GLANCE_COLUMNS = (
    ("Faithfulness (deletion vs random order)", ("deletion",), "faithfulness"),
    ("Randomisation (cascade)", ("randomisation_*",), "sanity-checks"),
    ("Random logit", ("random_logit",), "sanity-checks"),
    ("Cross-library", ("cross_library",), "consistency"),
    ("Monte Carlo error", ("monte_carlo",), "consistency"),
)
# The column of the "Is it the framework?" check, where the study has one: the same network in the other framework
FRAMEWORK_COLUMN = "Other framework, same weights"
QUALITY_SETTINGS = {
    "budget": "Budget",
    "steps": "Steps per curve",
    "random_orders": "Random pixel orders per image (the baseline)",
    "deletion_fill": "Deletion fills removed pixels with",
    "insertion_baseline": "Insertion starts from",
    "explained_class": "Explained class",
    "n_sanity": "Images of the sanity checks and the cross-check",
    "randomisation_rule": "Randomisation",
    "randomised_scopes": "Randomised scopes, as a cascade",
    "random_logit": "Random-logit check",
    "sanity_threshold": "A sanity check fails when the signed maps' Spearman ρ stays significantly above",
    "null": "The null the sanity checks are read against",
    "family": "Tests",
    "cross_check": "Cross-check against an independent library",
}


def combined(verdicts: list[Verdict]) -> Verdict | None:
    """Several verdicts read as one cell (a cascade): the first failure, else the first that did
    not decide, else the last pass; None without any."""
    if not verdicts:
        return None
    for status in ("fail", "too few images", "uninformative", "not significant", "not measured"):
        hit = [v for v in verdicts if v.status == status]
        if hit:
            return hit[0]
    return verdicts[-1]


def cell(verdict: Verdict | None, anchor: str, detail: str | None = None) -> dict[str, Any]:
    """A table cell: the symbol, the statistic with its interval (or ``detail`` in its place), the
    corrected p and the sample."""
    if verdict is None:
        return {"symbol": "—", "text": "", "anchor": anchor, "status": "none"}
    parts = []
    if detail:
        parts.append(detail)
    elif verdict.effect is not None and is_number(verdict.effect.mean):
        spec = ".2g" if abs(verdict.effect.mean) < 0.01 else ".2f"
        exact = verdict.effect.ci95[0] is None  # a rule without a test: the value against its tolerance
        value = fmt_number(verdict.effect.mean, ".1e") if exact else fmt_estimate(verdict.effect, spec)
        parts.append(f"{value} (≤ {verdict.reference:g}: float rounding)" if exact else str(value))
    if verdict.p_holm is not None:
        parts.append(f"Holm p {fmt_p(verdict.p_holm)}")
    parts.append(f"n = {verdict.n}" + (f" (needs {verdict.n_needed})" if verdict.n_needed else ""))
    symbol = SYMBOLS.get(verdict.status, verdict.status)
    return {"symbol": symbol, "text": Verbatim("; ".join(parts)), "anchor": anchor, "status": verdict.status}


def _verdicts(mq, keys: tuple[str, ...]) -> list[Verdict]:
    out = []
    for key in keys:
        if key.endswith("*"):
            out += [v for k, v in mq.verdicts.items() if k.startswith(key[:-1])]
        elif key in mq.verdicts:
            out.append(mq.verdicts[key])
    return out


def glance_rows(metrics: StudyMetrics) -> list[dict[str, Any]]:
    """One row per model x method: each column's cell (:data:`GLANCE_COLUMNS`)."""
    quality = metrics.quality
    if quality is None:
        return []
    rows = []
    for name, aq in quality.arms.items():
        arm = arm_key(name)
        for method, mq in sorted(aq.methods.items(), key=lambda kv: explanation_order((arm, kv[0]))):
            cells = [
                cell(combined(_verdicts(mq, keys)), anchor, _detail(mq, keys)) for _, keys, anchor in GLANCE_COLUMNS
            ]
            check = metrics.framework_check
            if check is not None:
                twin = check.methods.get(method) if check.source == name else None
                cells.append(cell(twin.verdict if twin else None, "is-it-the-framework"))
            rows.append({"model": model_title(name), "method": _method(method), "cells": cells})
    return rows


def _detail(mq, keys: tuple[str, ...]) -> str | None:
    """What a cell shows instead of the tested statistic: a sampled method's additivity error beside
    its Monte Carlo standard error (the test reads their squares' difference)."""
    if keys == ("monte_carlo",) and mq.monte_carlo is not None:
        mc = mq.monte_carlo
        return f"relative error {mc.relative_error:.2g} vs Monte Carlo SE {mc.relative_standard_error:.2g}"
    return None


def _method(method: str) -> str:
    spec = registry.METHODS.get(method)
    return method_title(method) + (" (baseline)" if spec and spec.baseline else "")


def _setting_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k} ({v})" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _plan_text(aq: ArmQuality) -> str | None:
    """What the budget bought for one arm, in words."""
    p = aq.plan
    if not p:
        return None
    text = (
        f"{p['n_sanity']} sanity image(s), {p['n_ceiling']} ceiling image(s), {p['random_orders']} random order(s), "
        f"{p['steps']} steps"
    )
    return text


def quality_context(metrics: StudyMetrics) -> dict[str, Any] | None:
    """The attribution-quality section: settings, rows per model x method, tests, findings."""
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
        arm = arm_key(name)
        explained = metrics.attributions.get(name, {})
        methods = []
        for method, mq in sorted(aq.methods.items(), key=lambda kv: explanation_order((arm, kv[0]))):
            spec = registry.METHODS.get(method)
            methods.append(
                {
                    "title": _method(method),
                    "q": mq,
                    "additivity": None if spec and spec.baseline else explained.get(method),
                    "randomisation": [mq.randomisation.get(scope) for scope in scopes],
                    "cells": {k: cell(v, "", _detail(mq, (k,))) for k, v in mq.verdicts.items()},
                }
            )
        tests = [(" vs ".join(method_title(k) for k in pair.split("~", 1)), t) for pair, t in aq.method_tests.items()]
        winners = {mode: method_title(m) for mode, m in aq.winners.items() if m}
        models.append(
            {"title": model_title(name), "q": aq, "methods": methods, "tests": tests, "winners": winners,
             "plan": _plan_text(aq)}
        )  # fmt: skip
    return {
        "settings": [(QUALITY_SETTINGS.get(k, k), _setting_text(settings[k])) for k in keys],
        "threshold": settings.get("sanity_threshold"),
        "scopes": scopes,
        "models": models,
        "findings": list(quality.findings),
        "glance": glance_rows(metrics),
        "glance_columns": [title for title, _, _ in GLANCE_COLUMNS]
        + ([FRAMEWORK_COLUMN] if metrics.framework_check else []),
        "more_images": [(model_title(n), aq.more_images) for n, aq in quality.arms.items() if aq.more_images],
    }
