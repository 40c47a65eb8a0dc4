"""Typed results: what the evaluate stage computes and metrics.json holds.

Each part of ``metrics.json`` is a dataclass of this package: the data summary, each model's
evaluation, each explanation's figures, the paired comparison, the agreement between maps and
the stage records (:mod:`common.results.base`), the attribution quality
(:mod:`common.results.quality`), a seed sweep's summaries (:mod:`common.results.seeds`) and what
separates framework from model (:mod:`common.results.framework`); every one is importable from
here. :mod:`common.typed_json` writes them as plain JSON (fields marked
``OMIT_NONE`` are left out while empty) and reads them back into the same types, so the
report and the benchmarks read attributes, not ``.get()`` chains.

``metrics.json`` carries :data:`SCHEMA_VERSION`. Files written before schema versions
existed read as version 0 (their fields are the same as version 1's). Version 2 added
``quality`` and the additivity's mean and relative error, and its agreement leaves out
pixels that are zero in both maps compared (version 1 counted them). Version 3 added the
verdicts (each with its statistic, reference, sample and Holm-corrected p-value), the null the
sanity checks are read against, SSIM, the agreement at a shared class with its ceiling and the
top-k and sign agreement, the Monte Carlo error, and the assess stage's budget; its agreement
compares maps at the true class (version 2: each model's predicted class); it may hold
``framework_check`` (one network in both frameworks) and ``factorial`` (the 2 x 2 design). The report built
from an older or newer file says so at its top.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.machine import MachineInfo
from common.results.base import (  # noqa: F401  (re-exported: readers import them from common.results)
    Agreement,
    ClassScores,
    DatasetSummary,
    Estimate,
    ExplanationSummary,
    ModelEvaluation,
    PairedComparison,
    SelectionSummary,
    SkippedFile,
    StageRecord,
    Verdict,
)
from common.results.framework import (  # noqa: F401  (re-exported: readers import them from common.results)
    FactorComparison,
    Factorial,
    FrameworkCheck,
    TwinMethod,
)
from common.results.quality import (  # noqa: F401  (re-exported: readers import them from common.results)
    ArmQuality,
    ChanceFraction,
    CrossLibrary,
    MethodQuality,
    MonteCarlo,
    MoreImages,
    PairTest,
    QualitySummary,
    RandomBaseline,
    Randomisation,
    Similarity,
)
from common.results.seeds import (  # noqa: F401  (re-exported: readers import them from common.results)
    PooledComparison,
    SeedRun,
    SeedsSummary,
    Stability,
)
from common.typed_json import OMIT_NONE, from_json

SCHEMA_VERSION = 3  # bump when a field of metrics.json changes meaning or disappears


@dataclass
class StudyMetrics:
    """Everything metrics.json holds; the report is rendered from this alone (and the figures)."""

    dataset: DatasetSummary
    config: dict[str, Any]  # the resolved StudyConfig.to_dict()
    versions: dict[str, str | None]
    models: dict[str, ModelEvaluation]  # arm name (e.g. pytorch_cnn) -> evaluation
    attributions: dict[str, dict[str, ExplanationSummary]]  # arm name -> method -> summary
    fallbacks: list[str]  # where the run departed from the planned study, in words
    selection: SelectionSummary
    comparison: PairedComparison | None = field(default=None, metadata=OMIT_NONE)  # when exactly two models ran
    agreement: Agreement | None = field(default=None, metadata=OMIT_NONE)  # when two or more maps exist
    quality: QualitySummary | None = field(default=None, metadata=OMIT_NONE)  # the assess stage's figures
    seeds: SeedsSummary | None = field(default=None, metadata=OMIT_NONE)  # a seed sweep's figures (--seeds)
    framework_check: FrameworkCheck | None = field(default=None, metadata=OMIT_NONE)  # "Is it the framework?"
    factorial: Factorial | None = field(default=None, metadata=OMIT_NONE)  # --design factorial
    execution: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)  # jobs, scheduler, threads per unit
    stages: list[StageRecord] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    # arm name -> the machine and kernel settings it was trained with (what decides whether
    # figures match another machine's; see README "Same seed, other machine")
    machine: dict[str, MachineInfo] | None = field(default=None, metadata=OMIT_NONE)

    # The order of metrics.json's keys (readers of the file see the summary first).
    JSON_ORDER = (
        "schema_version",
        "dataset",
        "config",
        "versions",
        "machine",
        "models",
        "attributions",
        "fallbacks",
        "comparison",
        "agreement",
        "quality",
        "seeds",
        "framework_check",
        "factorial",
        "selection",
        "execution",
        "stages",
    )


def read_metrics(values: Mapping[str, Any]) -> StudyMetrics:
    """metrics.json's content as :class:`StudyMetrics`; a file without ``schema_version``
    (written before versions existed) reads as version 0."""
    return from_json(StudyMetrics, {**values, "schema_version": values.get("schema_version", 0)})
