"""The report stage: figures and the two reports from the evaluate stage's results, then metrics.json."""

from __future__ import annotations

import time
from pathlib import Path

from common.config import SCALARS, SECTIONS, from_dict, selected_arms
from common.data.dataset import StudyData
from common.explanation import Explanation
from common.io import write_json_atomic
from common.registry import ARMS, arm_by_name
from common.report.figures import build_figures
from common.report.render import write_reports
from common.results import MoreImages, StageRecord, StudyMetrics
from common.typed_json import from_json, to_json
from experiments.budget import arm_explain_macs, extra_macs, settings_for
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
    if metrics.quality is not None:
        add_more_images(metrics, data, len(selection.explain_idx), records)
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


def add_more_images(metrics: StudyMetrics, data: StudyData, n_explain: int, records: list[StageRecord]) -> None:
    """For each arm with a verdict of too few images: the settings that give every verdict its
    images, and what they would cost on this machine, at the rate its explain stages ran here
    (seconds per multiply-add of this run; None where the explain stages were not timed)."""
    cfg = from_dict(_known_sections(metrics.config))
    n_classes, size = len(data.classes), data.image_size
    for aq in metrics.quality.arms.values():
        few = [v for mq in aq.methods.values() for v in mq.verdicts.values() if v.status == "too few images"]
        if not few:
            continue
        needed = max(v.n_needed or 0 for v in few)
        other, flags = settings_for(cfg, n_explain, needed)
        extra = extra_macs(cfg, n_explain, other, max(n_explain, needed), n_classes, size)
        seconds = 0.0
        for spec in selected_arms(cfg):
            rate = _seconds_per_mac(cfg, spec, records, n_explain, n_classes, size)
            seconds = None if rate is None or seconds is None else seconds + extra[spec.key] * rate
        sanity = min(mq.n_sanity for mq in aq.methods.values())
        aq.more_images = MoreImages(needed, sanity, n_explain, flags, seconds)


def _known_sections(config: dict) -> dict:
    """The config's values without the sections of arms this process does not know."""
    return {k: v for k, v in config.items() if k in (*SCALARS, *SECTIONS) or k in ARMS}


def _seconds_per_mac(cfg, spec, records: list[StageRecord], n_explain: int, n_classes: int, size: int) -> float | None:
    """An arm's explain stages' seconds in this run (its records) per multiply-add they cost."""
    seconds = [r.seconds for r in records if r.stage.startswith("explain_") and r.stage.split(" ")[1] == spec.key]
    macs = arm_explain_macs(cfg, spec, n_explain, n_classes, size)
    if not seconds or macs <= 0:
        return None
    return sum(seconds) / macs
