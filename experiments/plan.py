"""The work a study plans, in explainer passes, printed before the long stages start.

A *map* is one image's attribution for one class; a *pass* is one row through the model
forward and backward (:meth:`common.registry.MethodSpec.passes`: Deep SHAP 2 x background
rows per map, Gradient SHAP ``nsamples``, gradient x input one). Before training, the
number of wrong predictions is unknown, so ``predicted+true`` plans a range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.config import StudyConfig, selected_arms
from common.registry import METHODS
from experiments.layout import assessed_methods, sanity_positions


@dataclass(frozen=True)
class PlannedStage:
    arm: str  # the arm's title
    stage: str  # e.g. "explain_deep", "assess_gradient"
    images: int
    maps: tuple[int, int]  # fewest and most maps (image x class)
    passes: tuple[int, int]  # fewest and most forward+backward rows
    forward_rows: int = 0  # forward-only rows (the assessment's deletion and insertion curves)


def _maps_per_image(selection: str, n_classes: int) -> tuple[int, int]:
    return {"predicted": (1, 1), "predicted+true": (1, 2), "all": (n_classes, n_classes)}[selection]


def planned_work(
    cfg: StudyConfig, n_explain: int, n_classes: int, n_background: int, plans: Mapping[str, Any] | None = None
) -> list[PlannedStage]:
    """Every explain and assess stage of every selected arm, with its maps and passes; ``plans``:
    arm key -> what its assess stage runs (:func:`experiments.budget.allocate`; without it, the
    config's numbers, every explained image where they leave it open, one random order)."""
    e, a = cfg.explain, cfg.assess
    low, high = _maps_per_image(e.classes, n_classes)
    curve_rows = (a.steps + 1) * 2 * n_explain  # deletion and insertion, every step, every image
    rows = []
    for spec in selected_arms(cfg):
        plan = (plans or {}).get(spec.key)
        n_sanity = plan.n_sanity if plan else len(sanity_positions(n_explain, a.n_sanity))
        n_ceiling = plan.n_ceiling if plan else n_sanity
        orders = plan.random_orders if plan else (a.random_orders or 1)
        for method in e.methods:
            per_map = METHODS[method].passes(1, 1, n_background, e.nsamples)
            maps = (n_explain * low, n_explain * high)
            rows.append(
                PlannedStage(spec.title, f"explain_{method}", n_explain, maps, (maps[0] * per_map, maps[1] * per_map))
            )
        if not a.enabled:
            continue
        rows.append(PlannedStage(spec.title, "assess_random", n_explain, (0, 0), (0, 0), orders * curve_rows))
        for method in assessed_methods(cfg):
            m = METHODS[method]
            per_map = m.passes(1, 1, n_background, e.nsamples)
            extra = 0 if method in e.methods else n_explain  # a method the explain stage did not run
            extra += 0 if (method in e.methods and e.classes == "all") else n_sanity  # the random logit
            extra += n_ceiling if m.sampled else 0  # the second draws: noise floor, ceiling, Monte Carlo error
            extra += n_sanity if (spec.independent_library and a.cross_check and not m.baseline) else 0
            extra += len(a.randomise) * n_sanity  # the randomised models
            rows.append(
                PlannedStage(
                    spec.title, f"assess_{method}", n_explain, (extra, extra), (extra * per_map,) * 2, curve_rows
                )
            )
    return rows


def _span(pair: tuple[int, int]) -> str:
    return f"{pair[0]:,}" if pair[0] == pair[1] else f"{pair[0]:,}–{pair[1]:,}"


def format_plan(rows: list[PlannedStage], selection: str) -> str:
    """The plan as a text table, one line per stage, with totals per arm."""
    lines = [
        f"planned work (explain.classes: {selection}; a pass = one image row forward and backward):",
        f"  {'arm':<18} {'stage':<18} {'images':>6} {'maps':>11} {'passes':>17} {'forward rows':>13}",
    ]
    for r in rows:
        lines.append(
            f"  {r.arm:<18} {r.stage:<18} {r.images:>6} {_span(r.maps):>11} {_span(r.passes):>17} "
            f"{r.forward_rows or '':>13}"
        )
    for arm in dict.fromkeys(r.arm for r in rows):
        mine = [r for r in rows if r.arm == arm]
        total = (sum(r.passes[0] for r in mine), sum(r.passes[1] for r in mine))
        lines.append(f"  {arm}: {_span(total)} passes and {sum(r.forward_rows for r in mine):,} forward rows in all")
    return "\n".join(lines)
