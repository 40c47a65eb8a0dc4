"""The report stage: figures and the two reports from the evaluate stage's results, then metrics.json."""

from __future__ import annotations

import time
from pathlib import Path

from common.data.dataset import StudyData
from common.explanation import Explanation
from common.io import write_json_atomic
from common.registry import arm_by_name
from common.report.figures import build_figures
from common.report.render import write_reports
from common.results import StageRecord, StudyMetrics, from_json, to_json
from experiments.layout import ArmPaths, Selection


def write_report(
    out: Path,
    data: StudyData,
    selection: Selection,
    evaluation: dict,
    records: list[StageRecord],
    execution: dict | None = None,
) -> None:
    """The report stage: figures and the two reports from the evaluation and the stage
    records so far, then metrics.json, whose records end with this stage's own (which the
    reports, written before it ends, cannot show)."""
    start = time.perf_counter()
    metrics = from_json(StudyMetrics, evaluation)
    metrics.stages = list(records)
    metrics.execution = execution
    x_test, y_test = data.arrays("test")
    explanations = {}
    first_seed = metrics.seeds.seeds[0] if metrics.seeds else None  # a sweep's figures: its first seed
    for name, by_method in metrics.attributions.items():
        spec = arm_by_name(name)
        for method in by_method:
            explanations[(spec.key, method)] = Explanation.load(ArmPaths.of(out, spec, first_seed).attributions(method))
    figures = build_figures(
        out, metrics, x_test[selection.explain_idx], y_test[selection.explain_idx], list(data.classes), explanations
    )
    write_reports(out, metrics, figures)
    metrics.stages.append(StageRecord("report", "ran", time.perf_counter() - start))
    write_json_atomic(out / "metrics.json", to_json(metrics))
