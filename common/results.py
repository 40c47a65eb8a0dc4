"""Typed results: what the evaluate stage computes and metrics.json holds.

Each part of ``metrics.json`` is a dataclass here: the data summary, each model's
evaluation, each explanation's figures, the paired comparison, the agreement between maps
and the stage records. :mod:`common.typed_json` writes them as plain JSON (fields marked
``OMIT_NONE`` are left out while empty) and reads them back into the same types, so the
report and the benchmarks read attributes, not ``.get()`` chains.

``metrics.json`` carries :data:`SCHEMA_VERSION`. Files written before schema versions
existed read as version 0 (their fields are the same as version 1's). Version 2 added
``quality`` and the additivity's mean and relative error, and its agreement leaves out
pixels that are zero in both maps compared (version 1 counted them). Version 3 added the
verdicts (each with its statistic, reference, sample and Holm-corrected p-value), the null the
sanity checks are read against, SSIM, the agreement at a shared class with its ceiling and the
top-k and sign agreement, the Monte Carlo error, and the assess stage's budget; its agreement
compares maps at the true class (version 2: each model's predicted class). The report built
from an older or newer file says so at its top.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.machine import MachineInfo
from common.typed_json import OMIT_NONE, from_json

SCHEMA_VERSION = 3  # bump when a field of metrics.json changes meaning or disappears


@dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the data root
    # "not an image", "corrupt image: ...", "image too large: ...", "unreadable file: ...", "broken link",
    # "not a regular file", "image outside a class folder"
    reason: str


@dataclass
class DatasetSummary:
    """The data set as the study used it (``data/dataset.json`` and metrics.json's ``dataset``)."""

    name: str  # folder name, or "digits"
    root: str | None  # None for the bundled digits set
    layout: str  # "split-folders", "class-folders" or "bundled"
    held_out_folder: str | None  # e.g. "test"
    classes: list[str]
    image_size: int
    resize: str  # how images were resized, e.g. "PIL.BILINEAR"
    counts: dict[str, dict[str, int]]  # split -> class -> images
    skipped: list[SkippedFile]
    data_key: str  # content key of the decoded pixels and the split


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ModelEvaluation:
    """One model on the test split, with its training record."""

    test_accuracy: float
    test_accuracy_ci95: list[float]  # exact Clopper-Pearson [low, high]
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]  # rows = true class
    history: dict[str, list[float]]  # common.arm.HISTORY_KEYS -> one value per epoch
    best_val_epoch: int
    train_seconds: float
    predict_seconds: float
    info: dict[str, Any]  # what the arm recorded (device, parameters, weights, ...)
    backbone_weights: str | None = field(default=None, metadata=OMIT_NONE)  # a pretrained part's weights

    @property
    def device(self) -> str | None:
        return self.info.get("device")


@dataclass
class ExplanationSummary:
    """One model's maps from one method: cost and additivity."""

    seconds: float
    n_images: int
    n_background: int
    n_classes_explained: int  # maps per image at most (K for every class, 2 for predicted+true)
    output: str  # "logits" or "probability"
    additivity_max_abs_error: float  # max |sum(map) - (f(x) - E[f(background)])| over images and classes (float64)
    additivity_mean_abs_error: float | None = field(default=None, metadata=OMIT_NONE)  # mean of the same
    additivity_relative_error: float | None = field(default=None, metadata=OMIT_NONE)  # mean error / mean |f(x) - E f|
    nsamples: int | None = field(default=None, metadata=OMIT_NONE)  # samples per image of a sampled method
    additivity_note: str | None = field(default=None, metadata=OMIT_NONE)  # why the error is for reference only
    n_maps: int | None = field(default=None, metadata=OMIT_NONE)  # maps computed (image x class pairs)


@dataclass
class PairedComparison:
    """Exact McNemar test of two models on the same test images.

    Written with the arms' keys in the names of the discordant counts
    (``only_pytorch_correct``), so a reader of the JSON needs no legend.
    """

    arm_a: str  # arm keys, in registry order
    arm_b: str
    mcnemar_p: float
    only_a_correct: int
    only_b_correct: int
    both_correct: int
    both_wrong: int
    n: int

    def to_json(self) -> dict[str, Any]:
        return {
            "mcnemar_p": self.mcnemar_p,
            f"only_{self.arm_a}_correct": self.only_a_correct,
            f"only_{self.arm_b}_correct": self.only_b_correct,
            "both_correct": self.both_correct,
            "both_wrong": self.both_wrong,
            "n": self.n,
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> PairedComparison:
        only = [(m.group(1), v) for k, v in values.items() if (m := re.fullmatch(r"only_(.+)_correct", k))]
        if len(only) != 2:
            raise ValueError(f"comparison: expected two only_<arm>_correct counts, got {[k for k, _ in only]}")
        (a, only_a), (b, only_b) = only
        return cls(a, b, values["mcnemar_p"], only_a, only_b, values["both_correct"], values["both_wrong"], values["n"])


@dataclass
class Agreement:
    """Rank agreement between every pair of maps (labels such as "pytorch_deep")."""

    pairs: dict[str, float | None]  # "a~b" -> mean Spearman rho over images (None: undefined everywhere)
    n_images: dict[str, int]  # "a~b" -> images with a defined rho
    per_image: list[dict[str, float | None]]
    method: str  # how it was computed, in words
    # version 2 only: "a~b" -> the lower of the two maps' seed-to-seed agreements
    noise_floor: dict[str, float | None] = field(default_factory=dict)
    # "a~b" -> sqrt(r_a * r_b), each map's agreement with a second draw of itself on the same images
    # (1 for a deterministic method): the most the pair can agree, Spearman's correction for attenuation
    ceiling: dict[str, float | None] = field(default_factory=dict)
    ceiling_images: dict[str, int] = field(default_factory=dict)  # "a~b" -> images the ceiling is measured on
    prediction_differs: dict[str, int] = field(default_factory=dict)  # "a~b" -> images the two models predict apart
    top_k: dict[str, float | None] = field(default_factory=dict)  # "a~b" -> mean share of the top-k pixels in common
    sign: dict[str, float | None] = field(default_factory=dict)  # "a~b" -> ... in common and of the same sign
    top_k_fraction: float | None = None  # k as a share of the pixels
    compared_class: str = "predicted"  # the class each map is taken at: "true" (shared) or "predicted" (version 2)


@dataclass
class Estimate:
    """A mean over images with its two-sided 95% Student-t interval (None where undefined)."""

    mean: float | None
    ci95: list[float | None]  # [low, high]
    n: int  # images with a finite value


@dataclass
class Verdict:
    """One of the report's verdicts: a rule applied to a statistic, with its reference and its sample.

    ``status``: "pass" and "fail" (the rule decided, significant after Holm's correction where
    it is a test), "not significant" (enough images, no significant difference), "too few
    images" (fewer than any test in the family could decide on: ``n_needed``), "uninformative"
    (the null itself reaches the threshold) or "not measured".
    """

    status: str
    n: int  # images behind it
    effect: Estimate | None  # the statistic the rule reads: mean over images with its 95% interval
    reference: float | None  # what the statistic is tested against
    p: float | None  # two-sided, as computed
    p_holm: float | None  # Holm-corrected within the arm's family of tests
    rule: str  # the rule, in words
    n_needed: int | None = field(default=None, metadata=OMIT_NONE)  # images any verdict in the family needs


@dataclass
class Randomisation:
    """Trained vs randomised model's maps (Adebayo et al. 2018): Spearman of the signed map
    (which decides), of |map|, and SSIM; the verdict reads the signed map."""

    abs_rho: Estimate  # of |map|
    signed_rho: Estimate  # of the signed map
    ssim: Estimate | None = field(default=None, metadata=OMIT_NONE)  # of the signed maps, each scaled to [-1, 1]
    verdict: Verdict | None = field(default=None, metadata=OMIT_NONE)


@dataclass
class Similarity:
    """The input-only null: how alike two maps of the same images are when the models share nothing
    (two smooth random fields times (x - mean background)), on the same images."""

    signed_rho: Estimate
    abs_rho: Estimate
    ssim: Estimate


@dataclass
class ChanceFraction:
    """The fraction of pixels removed when the explained class's probability first reaches chance:
    the median over every explained image, an image that never reaches it counted as censored."""

    median: float | None  # None when half the images or more are censored (the median lies beyond 1)
    n: int  # images
    censored: int  # images that never reached chance


@dataclass
class MonteCarlo:
    """A sampled method's additivity, read against its Monte Carlo error (two draws' sums)."""

    relative_error: float  # mean |sum(map) - (f(x) - E f)| / mean |f(x) - E f|, the explain stage's draws
    relative_standard_error: float  # the Monte Carlo standard error of a sum on the same scale
    n: int  # maps (ceiling images, at the true class)


@dataclass
class CrossLibrary:
    """The same estimator from an independent library, on the sanity subset."""

    library: str  # e.g. "captum"
    max_relative_difference: float  # max over images of max|ours - theirs| / max|ours|
    rho: Estimate  # Spearman of the channel-summed maps
    # the same two statistics between two draws of shap on the same images (sampled methods)
    seed_max_relative_difference: float | None = field(default=None, metadata=OMIT_NONE)
    seed_rho: Estimate | None = field(default=None, metadata=OMIT_NONE)


@dataclass
class MethodQuality:
    """One model x method: faithfulness, sanity checks, complexity and cross-checks."""

    n_images: int
    n_sanity: int  # images of the randomisation check, noise floor and cross-check
    deletion_auc: Estimate  # area under the probability curve as top-ranked pixels are removed (lower: more faithful)
    insertion_auc: Estimate  # ... as they are inserted into the baseline (higher: more faithful)
    deletion_p_vs_random: float | None  # Wilcoxon signed-rank over images against the random order
    insertion_p_vs_random: float | None
    deletion_chance_fraction: Estimate  # fraction removed when the score first reaches chance (1/K)
    sparseness: Estimate  # Gini index of |map|
    random_logit_rho: Estimate  # signed map of the explained class vs another class's
    random_logit_abs_rho: Estimate
    randomisation: dict[str, Randomisation]  # scope -> correlation with the randomised model
    noise_floor_rho: Estimate | None  # sampled methods: two seeds' maps
    cross_library: CrossLibrary | None
    deletion_curve: list[float]  # mean over images, at ArmQuality.fractions
    insertion_curve: list[float]
    seconds: float
    # version 3
    deletion_effect: Estimate | None = field(default=None, metadata=OMIT_NONE)  # AUC - random order's, per image
    insertion_effect: Estimate | None = field(default=None, metadata=OMIT_NONE)
    chance: ChanceFraction | None = field(default=None, metadata=OMIT_NONE)
    random_logit_ssim: Estimate | None = field(default=None, metadata=OMIT_NONE)
    null: Similarity | None = field(default=None, metadata=OMIT_NONE)  # on the sanity images
    reliability: Estimate | None = field(default=None, metadata=OMIT_NONE)  # second draw at the true class
    monte_carlo: MonteCarlo | None = field(default=None, metadata=OMIT_NONE)
    # "deletion", "insertion", "randomisation_<scope>", "random_logit", "cross_library", "monte_carlo"
    verdicts: dict[str, Verdict] = field(default_factory=dict)


@dataclass
class RandomBaseline:
    """The random pixel order every map must beat (mean over its seeded orders per image)."""

    n_orders: int
    deletion_auc: Estimate
    insertion_auc: Estimate
    deletion_chance_fraction: Estimate
    deletion_curve: list[float]
    insertion_curve: list[float]


@dataclass
class PairTest:
    """Wilcoxon signed-rank p of two methods' AUCs over the same images (and Holm-corrected)."""

    deletion_p: float | None
    insertion_p: float | None
    deletion_p_holm: float | None = field(default=None, metadata=OMIT_NONE)
    insertion_p_holm: float | None = field(default=None, metadata=OMIT_NONE)


@dataclass
class MoreImages:
    """What a verdict that had too few images would need here: the settings, and what they cost."""

    n_needed: int  # images each verdict of the family needs
    n_sanity: int  # images the sanity checks had
    n_explained: int  # images explained
    flags: str  # the command-line settings that give every verdict its images
    seconds: float | None  # their extra cost on the machine of this run (from its explain stages' rate)


@dataclass
class ArmQuality:
    fractions: list[float]  # of pixels removed/inserted at each step
    chance: float  # 1/K
    random: RandomBaseline
    methods: dict[str, MethodQuality]
    method_tests: dict[str, PairTest]  # "deep~gradient" -> p-values
    seconds: float
    # version 3
    family_size: int | None = field(default=None, metadata=OMIT_NONE)  # tests corrected together (Holm)
    n_needed: int | None = field(default=None, metadata=OMIT_NONE)  # images any of its verdicts needs
    winners: dict[str, str | None] = field(default_factory=dict)  # "deletion"/"insertion" -> method, if significant
    random_chance: ChanceFraction | None = field(default=None, metadata=OMIT_NONE)
    plan: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)  # what the budget bought (experiments/budget)
    more_images: MoreImages | None = field(default=None, metadata=OMIT_NONE)  # set by the report stage


@dataclass
class QualitySummary:
    """metrics.json's ``quality``: the attribution-quality section of the report."""

    settings: dict[str, Any]  # the assess settings as run, with what they mean in words
    arms: dict[str, ArmQuality]  # arm name -> its quality
    findings: list[str]  # plain sentences generated from the numbers


@dataclass
class SelectionSummary:
    explain_test_positions: list[int]  # positions in the test split
    background_train_positions: list[int]  # positions in the train split


@dataclass
class SeedRun:
    """One training seed's headline figures (the report's full sections show the first seed)."""

    seed: int
    test_accuracy: dict[str, float]  # arm name -> accuracy on the shared test split
    test_accuracy_ci95: dict[str, list[float]]  # arm name -> exact Clopper-Pearson over test images
    comparison: PairedComparison | None  # McNemar of this seed's two models (when exactly two ran)
    agreement: dict[str, float | None]  # "a~b" -> mean Spearman rho of this seed's maps


@dataclass
class PooledComparison:
    """The two models over every seed, paired by seed (same split, same test images)."""

    arm_a: str  # arm keys, in registry order
    arm_b: str
    accuracy_difference: Estimate  # accuracy a - b: mean over seeds, 95% t-interval over seeds (n: seeds)
    paired_t_p: float | None  # two-sided paired t-test over seeds (scipy.stats.ttest_rel); None below 2 seeds
    seeds_a_better: int
    seeds_b_better: int
    seeds_tied: int
    only_a_correct: int  # McNemar's discordant counts summed over seeds (not independent: same images)
    only_b_correct: int


@dataclass
class Stability:
    """Explanation stability under retraining: the same image's map across training seeds."""

    rho: Estimate  # per image the mean Spearman rho over seed pairs; mean and 95% t-interval over images
    pairs: dict[str, float | None]  # "seed-0~seed-1" -> mean rho over images


@dataclass
class SeedsSummary:
    """metrics.json's ``seeds``: a seed sweep's per-seed figures and their summaries."""

    split_seed: int  # seed of the split and the explained/background images, shared by every training seed
    seeds: list[int]  # training seeds; the report's figures and quality section are the first one's
    interval: str  # how the intervals over seeds are computed, in words
    stability_method: str  # how stability is computed, in words
    runs: list[SeedRun]
    accuracy: dict[str, Estimate]  # arm name -> test accuracy's mean over seeds, 95% t-interval (n: seeds)
    agreement: dict[str, Estimate]  # "a~b" -> the maps' agreement: mean over seeds, 95% t-interval (n: seeds)
    stability: dict[str, dict[str, Stability]]  # arm name -> method -> stability across seeds
    comparison: PooledComparison | None = field(default=None, metadata=OMIT_NONE)  # when exactly two models ran


@dataclass
class StageRecord:
    stage: str  # e.g. "train pytorch", "evaluate"
    status: str  # "ran" or "cached"
    seconds: float  # of the run that produced the stage's artifacts


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
        "selection",
        "execution",
        "stages",
    )


def read_metrics(values: Mapping[str, Any]) -> StudyMetrics:
    """metrics.json's content as :class:`StudyMetrics`; a file without ``schema_version``
    (written before versions existed) reads as version 0."""
    return from_json(StudyMetrics, {**values, "schema_version": values.get("schema_version", 0)})
