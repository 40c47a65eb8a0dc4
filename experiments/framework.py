"""Framework or model? The evaluate stage's figures that separate the two.

- :func:`framework_check` ("Is it the framework?", every study): the trained PyTorch CNN carried
  with its weights into Keras (its twin, an arm of its own whose ``weights_of`` names the
  source) and explained there by the Keras explainers on the same images with the same
  background. Where the two frameworks' maps of the *same* network agree to float rounding
  (deterministic Deep SHAP) or as well as two draws of one framework agree (sampled Gradient
  SHAP: its Monte Carlo ceiling), the differences between the two published arms' maps come
  from the models, not from the frameworks.
- :func:`factorial` (``--design factorial``): two architectures, each trained in both frameworks;
  the framework effect (same architecture, two frameworks) and the architecture effect (same
  framework, two architectures) on accuracy (exact McNemar, Holm over the four comparisons) and on
  the maps' agreement at the true class, beside the retraining ceiling (one arm across training
  seeds) where the study has ``--seeds``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.explanation import Explanation, channel_sum
from common.quality.agreement import nonzero_mask, rank_correlation
from common.registry import ArmSpec, map_label, method_spec
from common.results import (
    Agreement,
    Estimate,
    FactorComparison,
    Factorial,
    FrameworkCheck,
    PairedComparison,
    TwinMethod,
)
from common.stats import estimate, holm, mcnemar_exact
from common.verdicts import Pending, decide, exact


def twin_method(
    own: Explanation,
    twin: Explanation,
    true: np.ndarray,
    ceiling_rows: np.ndarray | None = None,
    ceiling_rho: np.ndarray | None = None,
) -> tuple[TwinMethod, Pending | None]:
    """One method's maps of one network in its own framework (``own``) and in the other (``twin``).

    Args:
        own, twin: the two explain stages' results, on the same images.
        true: ``(N,)`` the images' true classes (each image's maps are correlated at it).
        ceiling_rows, ceiling_rho: a sampled method's ceiling: the positions among the explained
            images of the assess stage's second draws, and per position the Spearman between the
            two draws of ``own``'s framework at the true class.

    Returns:
        The figures (a deterministic method's verdict set: the relative difference against float
        rounding), and for a sampled method the test its verdict comes from (decided with the
        others of the check by :func:`check_verdicts`), else None.
    """
    a, b = np.asarray(own.attributions, np.float64), np.asarray(twin.attributions, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{own.method}: the twin's maps are {b.shape}, the network's own {a.shape}")
    same = (own.explained_classes == twin.explained_classes) & (own.explained_classes >= 0)  # (N, K'): same class
    scale = float(np.abs(a[same]).max()) if same.any() else 0.0
    diff = float(np.abs(a[same] - b[same]).max() / scale) if scale > 0 else None
    rho = _rho_at_true_class(own, twin, true)
    result = TwinMethod(max_relative_difference=diff, rho=estimate(rho), n_maps=int(same.sum()))
    if not method_spec(own.method).sampled:
        result.verdict = exact("cross_framework_exact", diff, int(same.sum()))
        return result, None
    if ceiling_rows is None or ceiling_rho is None or not len(ceiling_rows):
        return result, None
    result.ceiling = estimate(ceiling_rho)
    return result, Pending("cross_framework", rho[ceiling_rows] - ceiling_rho, 0.0, "above", rejects_to_pass=False)


def _rho_at_true_class(own: Explanation, twin: Explanation, true: np.ndarray) -> np.ndarray:
    """(N,) per image, Spearman of the two channel-summed maps at its true class (NaN where either
    did not explain it, or a map is constant), leaving out pixels zero in both."""
    rho = np.full(len(true), np.nan)
    hit = (own.explained_classes == true[:, None]) & (twin.explained_classes == true[:, None])
    rows = np.flatnonzero(hit.any(axis=1))
    if len(rows):
        cols = hit[rows].argmax(axis=1)
        x = channel_sum(own.attributions[rows, cols], np.float64)
        y = channel_sum(twin.attributions[rows, cols], np.float64)
        rho[rows] = rank_correlation(x, y, mask=nonzero_mask(x, y))
    return rho


def check_verdicts(methods: Mapping[str, TwinMethod], tests: Mapping[str, Pending]) -> None:
    """The sampled methods' verdicts: their tests as one family (Holm), set on ``methods``."""
    if tests:
        verdicts, _, _ = decide(tests)
        for method, verdict in verdicts.items():
            methods[method].verdict = verdict


def framework_check(
    source: ArmSpec,
    twin: ArmSpec,
    other: ArmSpec | None,
    y_test: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    methods: Mapping[str, TwinMethod],
    agreement: Agreement | None,
) -> FrameworkCheck:
    """The check's figures: both networks' accuracy and predictions (``predictions``: arm key ->
    predicted class per test image), each method's figures (:func:`twin_method`) with the two
    published arms' agreement at the true class beside them (``other``: the other framework's arm)."""
    own, carried = predictions[source.key], predictions[twin.key]
    for method, figures in methods.items():
        if other is not None and agreement is not None:
            pair = _pair(agreement, map_label(source.key, method), map_label(other.key, method))
            figures.models_rho = agreement.pairs.get(pair) if pair else None
            figures.models_ceiling = agreement.ceiling.get(pair) if pair else None
    return FrameworkCheck(
        source=source.name,
        twin=twin.name,
        other=other.name if other else None,
        test_accuracy=float((own == y_test).mean()),
        twin_test_accuracy=float((carried == y_test).mean()),
        predictions_differ=int((own != carried).sum()),
        n_test=len(y_test),
        methods=dict(methods),
    )


def _pair(agreement: Agreement, a: str, b: str) -> str | None:
    """The key of the pair of maps ``a`` and ``b`` in ``agreement`` (either order), None if absent."""
    return next((p for p in (f"{a}~{b}", f"{b}~{a}") if p in agreement.pairs), None)


def factorial(
    arms: list[ArmSpec],
    y_test: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    agreement: Agreement | None,
    methods: list[str],
    defaults: Mapping[str, list[list[str]]] | None = None,
) -> Factorial | None:
    """The 2 x 2 of two architectures by two frameworks, or None when ``arms`` are not one.

    Each framework effect compares the two frameworks' arms of one architecture, each architecture
    effect the two architectures' arms of one framework: the accuracy difference with its exact
    McNemar test (Holm over the four), and per method the maps' agreement at the true class with
    its ceiling.
    """
    frameworks = list(dict.fromkeys(s.framework for s in arms))
    architectures = list(dict.fromkeys(s.architecture for s in arms))
    cells: dict[str, dict[str, ArmSpec]] = {a: {} for a in architectures}
    for spec in arms:
        cells[spec.architecture][spec.framework] = spec
    if len(frameworks) != 2 or len(architectures) != 2 or any(len(row) != 2 for row in cells.values()):
        return None
    pairs = [("framework", arch, cells[arch][frameworks[0]], cells[arch][frameworks[1]]) for arch in architectures]
    pairs += [("architecture", fw, cells[architectures[0]][fw], cells[architectures[1]][fw]) for fw in frameworks]
    comparisons = [_factor_comparison(*p, y_test, predictions, agreement, methods) for p in pairs]
    corrected = holm({str(i): c.comparison.mcnemar_p for i, c in enumerate(comparisons)})
    for i, c in enumerate(comparisons):
        c.mcnemar_p_holm = corrected[str(i)]
    return Factorial(
        frameworks=frameworks,
        architectures=architectures,
        cells={arch: {fw: spec.name for fw, spec in row.items()} for arch, row in cells.items()},
        comparisons=comparisons,
        defaults={k: v for k, v in (defaults or {}).items() if k in architectures},
    )


def _factor_comparison(
    factor: str,
    held: str,
    a: ArmSpec,
    b: ArmSpec,
    y_test: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    agreement: Agreement | None,
    methods: list[str],
) -> FactorComparison:
    pred_a, pred_b = predictions[a.key], predictions[b.key]
    test = mcnemar_exact(y_test, pred_a, pred_b)
    rho, ceiling, n = {}, {}, {}
    for method in methods:
        pair = _pair(agreement, map_label(a.key, method), map_label(b.key, method)) if agreement else None
        rho[method] = agreement.pairs.get(pair) if pair else None
        ceiling[method] = agreement.ceiling.get(pair) if pair else None
        n[method] = agreement.n_images.get(pair, 0) if pair else 0
    return FactorComparison(
        factor=factor,
        held=held,
        arm_a=a.name,
        arm_b=b.name,
        accuracy_difference=float((pred_a == y_test).mean() - (pred_b == y_test).mean()),
        comparison=PairedComparison(arm_a=a.key, arm_b=b.key, **test),
        mcnemar_p_holm=None,
        rho=rho,
        ceiling=ceiling,
        n_images=n,
    )


def retraining_ceiling(stability: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, Estimate]]:
    """Each arm's and method's agreement with itself across training seeds (a seed sweep's stability)."""
    return {arm: {m: s.rho for m, s in by_method.items()} for arm, by_method in stability.items()}
