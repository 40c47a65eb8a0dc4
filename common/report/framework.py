"""The report's "Is it the framework?" and "Framework or architecture?" sections: their template
context and the sentence each ends with, from :class:`common.results.FrameworkCheck` and
:class:`common.results.Factorial` alone (rendered by ``templates/framework.md.j2`` and
``framework.html.j2``)."""

from __future__ import annotations

from typing import Any

from common.report.names import method_title, model_title
from common.report.quality import cell
from common.results import FrameworkCheck, StudyMetrics, TwinMethod
from common.verdicts import ALPHA, FLOAT_TOLERANCE


def framework_context(metrics: StudyMetrics) -> dict[str, Any] | None:
    """What the two sections show; None when the study has neither."""
    check, design = metrics.framework_check, metrics.factorial
    if check is None and design is None:
        return None
    out: dict[str, Any] = {"check": None, "factorial": None}
    if check is not None:
        out["check"] = {
            "c": check,
            "source": model_title(check.source),
            "other": model_title(check.other) if check.other else None,
            "rows": [
                {"method": method_title(m), "t": t, "verdict": cell(t.verdict, "is-it-the-framework")}
                for m, t in check.methods.items()
            ],
            "finding": check_finding(check),
            "tolerance": FLOAT_TOLERANCE,
        }
    if design is not None:
        models = metrics.models
        out["factorial"] = {
            "f": design,
            "accuracy": [
                {"architecture": arch, "cells": [models.get(design.cells[arch][fw]) for fw in design.frameworks]}
                for arch in design.architectures
            ],
            "comparisons": [
                {"c": c, "a": model_title(c.arm_a), "b": model_title(c.arm_b), "retraining": _retraining(design, c)}
                for c in design.comparisons
            ],
            "methods": [(m, method_title(m)) for m in _methods(design)],
            "alpha": ALPHA,
            "finding": factorial_finding(design),
        }
    return out


def _methods(design) -> list[str]:
    return list(dict.fromkeys(m for c in design.comparisons for m in c.rho))


def _retraining(design, comparison) -> dict[str, str]:
    """Method -> the lower of the two arms' stability across seeds (the retraining ceiling), as text."""
    out = {}
    for method in comparison.rho:
        values = [design.retraining.get(arm, {}).get(method) for arm in (comparison.arm_a, comparison.arm_b)]
        means = [v.mean for v in values if v is not None and v.mean is not None]
        out[method] = f"{min(means):.3f}" if len(means) == 2 else "—"
    return out


def _agrees(t: TwinMethod) -> bool | None:
    """The verdict as agree (True), differ (False) or undecided (None)."""
    if t.verdict is None:
        return None
    return {"pass": True, "fail": False}.get(t.verdict.status)


def check_finding(check: FrameworkCheck) -> str:
    """One sentence: what the same network's maps in the two frameworks say about the differences
    between the two published arms."""
    agree, differ, open_ = [], [], []
    for method, t in check.methods.items():
        title = method_title(method)
        verdict = _agrees(t)
        if verdict is True:
            detail = f"to {t.max_relative_difference:.1g} of the largest value"
            if t.ceiling is not None and t.ceiling.mean is not None:
                detail += f" (ρ {t.rho.mean:.3f}, above two draws of one framework: {t.ceiling.mean:.3f})"
            agree.append(f"{title} {detail}")
        elif verdict is False:
            differ.append(f"{title} (largest relative difference {t.max_relative_difference:.2g}, ρ {t.rho.mean:.3f})")
        else:
            open_.append(f"{title} ({t.verdict.status if t.verdict else 'not measured'})")
    source = model_title(check.source)
    parts = []
    if agree:
        parts.append(f"with identical weights ({source}) the two frameworks' maps agree: {'; '.join(agree)}")
    if differ:
        parts.append(f"they differ beyond float rounding for {'; '.join(differ)}")
    if open_:
        parts.append(f"undecided: {'; '.join(open_)}")
    sentence = ", ".join(parts)
    sentence = sentence[0].upper() + sentence[1:]
    models = [t.models_rho for t in check.methods.values() if t.models_rho is not None]
    if agree and not differ and not open_:
        span = _span(models)
        sentence += (
            f"; the differences between the two published arms' maps{f' (ρ {span})' if span else ''} come from the "
            "models, not from the frameworks."
        )
    elif differ:
        sentence += "; part of the differences between the published arms' maps may come from the frameworks."
    else:
        sentence += "."
    if check.predictions_differ:
        sentence += f" The twin predicts {check.predictions_differ} of {check.n_test} test images differently."
    return sentence


def _span(values: list[float]) -> str | None:
    if not values:
        return None
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"


def factorial_finding(design) -> str:
    """What the 2 x 2 says, factor by factor: the accuracy differences with their corrected tests, and
    the maps' agreement (against the retraining ceiling where the study has seeds)."""
    sentences = []
    for factor in ("framework", "architecture"):
        rows = [c for c in design.comparisons if c.factor == factor]
        accuracy = "; ".join(
            f"{c.held}: {c.accuracy_difference * 100:+.1f} points "
            f"({_significance(c.mcnemar_p_holm)}, Holm-corrected McNemar p {_p(c.mcnemar_p_holm)})"
            for c in rows
        )
        maps = []
        for c in rows:
            values = [v for v in c.rho.values() if v is not None]
            if values:
                retrain = [x for x in _retraining(design, c).values() if x != "—"]
                beside = f" (retraining ceiling {', '.join(retrain)})" if retrain else ""
                maps.append(f"{c.held} ρ {_span(values)}{beside}")
        what = (
            "the same architecture in the two frameworks"
            if factor == "framework"
            else ("the two architectures in the same framework")
        )
        sentence = f"{factor.capitalize()} effect, {what}: accuracy {accuracy}"
        if maps:
            sentence += f"; maps agree at the true class {'; '.join(maps)}"
        sentences.append(sentence + ".")
    return " ".join(sentences)


def _significance(p: float | None) -> str:
    if p is None:
        return "not tested"
    return "significant" if p < ALPHA else "not significant"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
