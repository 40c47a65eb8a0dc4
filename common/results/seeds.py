"""metrics.json's ``seeds``: a seed sweep's per-seed figures and their summaries over seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.results.base import Estimate, PairedComparison
from common.typed_json import OMIT_NONE


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
