"""The report's "Across training seeds" section: the template context of a seed sweep's summaries.

Rendered by ``templates/seeds.md.j2`` and ``seeds.html.j2`` (included by the two report
templates) from :class:`common.results.SeedsSummary` alone.
"""

from __future__ import annotations

from typing import Any

from common import registry
from common.report.names import framework_title, method_title, model_title
from common.results import Estimate, StudyMetrics


def seeds_context(metrics: StudyMetrics) -> dict[str, Any] | None:
    """What the seeds section shows; None for a single-seed study (no section)."""
    s = metrics.seeds
    if s is None:
        return None
    accuracy = [
        {"title": model_title(name), "per_seed": [run.test_accuracy.get(name) for run in s.runs], "summary": estimate}
        for name, estimate in s.accuracy.items()
    ]
    stability = [
        {"model": model_title(name), "method": method_title(m), "s": st}
        for name, by_method in s.stability.items()
        for m, st in by_method.items()
    ]

    def stability_of(label: str) -> Estimate | None:
        split = registry.split_map_label(label)
        if split is None or split[0] not in registry.ARMS:
            return None
        st = s.stability.get(registry.ARMS[split[0]].name, {}).get(split[1])
        return st.rho if st else None

    versus = []
    for pair, estimate in s.agreement.items():
        a, b = pair.split("~", 1)
        versus.append(
            {"pair": pair, "agreement": estimate, "stability_a": stability_of(a), "stability_b": stability_of(b)}
        )
    comparisons = [{"seed": run.seed, "c": run.comparison} for run in s.runs if run.comparison]
    pooled = s.comparison
    return {
        "s": s,
        "first": s.seeds[0],
        "accuracy": accuracy,
        "comparisons": comparisons,
        "titles": [framework_title(pooled.arm_a), framework_title(pooled.arm_b)] if pooled else [],
        "pooled": pooled,
        "stability": stability,
        "versus": versus,
    }
