"""metrics.json's ``quality``: the assess stage's figures per model and method, with their verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.results.base import Estimate, Verdict
from common.typed_json import OMIT_NONE


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
