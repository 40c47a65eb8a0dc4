"""The report's verdicts: each rule, the statistic it reads, its reference and the images it needs.

A verdict is a test over the explained images of one arm. Every test of an arm (each method's
faithfulness and sanity checks, its consistency checks, the comparisons of its methods) is one
family: their two-sided p-values are corrected together with Holm's method
(:func:`common.stats.holm`), and no verdict is given on fewer images than the smallest number on
which any test of the family could reach significance after that correction
(:func:`common.stats.images_needed`): below it the verdict is "too few images", whatever the
data. The rules:

- **faithfulness** (deletion, insertion): the per-image difference between the map's area under
  the curve and the random orders' (Wilcoxon signed-rank over images): "pass" when the map
  removes (deletion) or restores (insertion) the score significantly faster than a random pixel
  order, "fail" when significantly slower, else "not significant";
- **sanity** (each randomisation step, random logit): the Spearman correlation of the *signed*
  maps (the ranking deletion uses), against the threshold 0.5: "fail" when significantly above
  (the map keeps its ranking although the weights or the class changed), "pass" when
  significantly below. The null it is read against depends on the images alone
  (:func:`common.quality.randomisation.input_only_similarity`): where the null's own signed
  correlation reaches the threshold, the check cannot tell and says "uninformative". |map| and
  SSIM are shown beside it, with their nulls, as description only: |map| inherits
  |x - background| whatever the model;
- **consistency**: a deterministic method's cross-library difference and additivity error
  against float rounding (a tolerance, no test); a sampled method's cross-library agreement
  against two draws of the same library, and its additivity error against its Monte Carlo
  error: "fail" when significantly worse, "pass" when not, on enough images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from common.results import Estimate, Verdict
from common.stats import estimate, holm, images_needed, signed_rank_p

ALPHA = 0.05  # family-wise error rate of an arm's verdicts (Holm)
SANITY_THRESHOLD = 0.5  # a sanity check fails when the signed maps' Spearman stays above this
FLOAT_TOLERANCE = 1e-3  # a deterministic method's relative difference or additivity error that is float rounding

RULES = {
    "deletion": "deletion AUC minus the random orders', per image: below 0 is faster than a random order",
    "insertion": "insertion AUC minus the random orders', per image: above 0 is faster than a random order",
    "sanity": f"Spearman of the signed maps, per image: significantly above {SANITY_THRESHOLD} fails, below passes",
    "cross_library_exact": f"largest relative difference from the other library: float rounding (<= {FLOAT_TOLERANCE})",
    "cross_library": "Spearman with the other library minus Spearman between two draws of shap, per image",
    "cross_framework_exact": "largest relative difference between the two frameworks' maps of one network: "
    f"float rounding (<= {FLOAT_TOLERANCE})",
    "cross_framework": "Spearman between the two frameworks' maps of one network minus Spearman between two draws "
    "of its own framework, per image",
    "monte_carlo_exact": f"relative additivity error: float rounding (<= {FLOAT_TOLERANCE})",
    "monte_carlo": "squared additivity error minus the squared Monte Carlo error of the same sum, per map",
}


@dataclass(frozen=True)
class Pending:
    """A test of the family, before the correction: its per-image statistic and how to read it."""

    kind: str  # a key of RULES
    values: np.ndarray  # the statistic, one value per image (or map)
    reference: float  # what its median is tested against
    passes: str  # the side on which the rule passes: "below" or "above" the reference
    rejects_to_pass: bool = True  # False: the rule passes unless the test rejects (consistency checks)
    null_upper: float | None = None  # sanity: the upper 95% bound of the null's statistic

    @property
    def p(self) -> float | None:
        return signed_rank_p(self.values, self.reference)


def exact(kind: str, value: float | None, n: int) -> Verdict:
    """A rule without a test: ``value`` within FLOAT_TOLERANCE passes (a deterministic method)."""
    if value is None or not np.isfinite(value):
        return Verdict("not measured", n, None, FLOAT_TOLERANCE, None, None, RULES[kind])
    effect = Estimate(mean=float(value), ci95=[None, None], n=n)
    status = "pass" if value <= FLOAT_TOLERANCE else "fail"
    return Verdict(status, n, effect, FLOAT_TOLERANCE, None, None, RULES[kind])


def decide(
    tests: Mapping[str, Pending], planned: int | None = None
) -> tuple[dict[str, Verdict], dict[str, float | None], int]:
    """Every test's verdict, Holm-corrected within the family, its corrected p-values, and the
    images a verdict of this family needs: of the ``planned`` family (every test the arm's checks
    make when they all run), or of the tests made."""
    raw = {name: t.p for name, t in tests.items()}
    corrected = holm(raw)
    needed = images_needed(max(planned or 0, sum(p is not None for p in raw.values())), ALPHA)
    verdicts = {name: _verdict(t, raw[name], corrected[name], needed) for name, t in tests.items()}
    return verdicts, corrected, needed


def _verdict(test: Pending, p: float | None, p_holm: float | None, needed: int) -> Verdict:
    values = np.asarray(test.values, dtype=np.float64)
    effect = estimate(values)
    rule = RULES[test.kind]
    if effect.n == 0:
        return Verdict("not measured", 0, None, test.reference, None, None, rule)
    if test.null_upper is not None and test.null_upper >= test.reference:
        return Verdict("uninformative", effect.n, effect, test.reference, p, p_holm, rule)
    if effect.n < needed:
        return Verdict("too few images", effect.n, effect, test.reference, p, p_holm, rule, n_needed=needed)
    significant = p_holm is not None and p_holm < ALPHA
    on_pass_side = (np.median(values[np.isfinite(values)]) < test.reference) == (test.passes == "below")
    if significant:
        status = "pass" if on_pass_side else "fail"
    else:
        status = "not significant" if test.rejects_to_pass else "pass"
    return Verdict(status, effect.n, effect, test.reference, p, p_holm, rule)
