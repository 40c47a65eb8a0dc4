"""The report's findings: plain sentences generated from the attribution-quality figures."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.registry import RANDOMISATION_SCOPES, map_title
from common.results import ArmQuality, MethodQuality

# A check fails when the mean rank correlation stays above this: the map barely changed
# although the model (randomisation) or the explained class (random logit) did.
SANITY_THRESHOLD = 0.5


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    return "p n/a" if p is None else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def findings(quality: Mapping[str, ArmQuality], arm_keys: Mapping[str, str], titles: Mapping[str, str]) -> list[str]:
    """Plain sentences generated from the numbers: which maps are more faithful, which fail a check.

    Args:
        quality: arm name -> its quality.
        arm_keys: arm name -> arm key (for map titles).
        titles: arm name -> the model's title.
    """
    lines = []
    for name, aq in quality.items():
        key, title = arm_keys[name], titles[name]
        if not aq.methods:
            continue
        lines.append(_most_faithful(aq, key, title))
        lines.append(_against_random_order(aq, key, title))
        for method, mq in aq.methods.items():
            lines += _checks(mq, map_title(key, method))
    failed = [line for line in lines if " fails " in line]
    if quality and not failed:
        lines.append(
            f"No map fails a sanity check (randomisation and random-logit correlations at most {SANITY_THRESHOLD})."
        )
    return lines


def _most_faithful(aq: ArmQuality, key: str, title: str) -> str:
    """The most faithful map by deletion (with the runner-up and their test) and by insertion."""
    ms = aq.methods
    by_del = sorted(ms, key=lambda m: np.inf if ms[m].deletion_auc.mean is None else ms[m].deletion_auc.mean)
    by_ins = sorted(ms, key=lambda m: -np.inf if ms[m].insertion_auc.mean is None else -ms[m].insertion_auc.mean)
    best_d, best_i = by_del[0], by_ins[0]
    text = (
        f"{title}: by deletion the most faithful map is {map_title(key, best_d)} "
        f"(AUC {_f(ms[best_d].deletion_auc.mean)}; random order {_f(aq.random.deletion_auc.mean)})"
    )
    if len(by_del) > 1:
        second = by_del[1]
        test = aq.method_tests.get(f"{best_d}~{second}") or aq.method_tests.get(f"{second}~{best_d}")
        p_del = _p(test.deletion_p if test else None)
        text += f", ahead of {map_title(key, second)} ({_f(ms[second].deletion_auc.mean)}, {p_del})"
    ins, rand_ins = _f(ms[best_i].insertion_auc.mean), _f(aq.random.insertion_auc.mean)
    return text + f"; by insertion it is {map_title(key, best_i)} (AUC {ins}; random {rand_ins})."


def _beats_random(mq: MethodQuality, random_auc: float | None) -> bool:
    """Whether a map's deletion AUC is below the random order's, with Wilcoxon p < 0.05."""
    auc, p = mq.deletion_auc.mean, mq.deletion_p_vs_random
    return auc is not None and random_auc is not None and auc < random_auc and p is not None and p < 0.05


def _against_random_order(aq: ArmQuality, key: str, title: str) -> str:
    not_beating = [m for m, mq in aq.methods.items() if not _beats_random(mq, aq.random.deletion_auc.mean)]
    if not not_beating:
        return f"{title}: every map removes the score significantly faster than a random pixel order."
    return (
        f"{title}: {', '.join(map_title(key, m) for m in not_beating)} did not remove the score "
        "significantly faster than a random pixel order (deletion, Wilcoxon p < 0.05 not reached)."
    )


def _checks(mq: MethodQuality, map_name: str) -> list[str]:
    """One map's failed sanity checks and its cross-check against an independent library."""
    lines = []
    for scope, r in mq.randomisation.items():
        if r.abs_rho.mean is not None and r.abs_rho.mean > SANITY_THRESHOLD:
            lines.append(
                f"{map_name} fails the model-randomisation check ({scope}: "
                f"{RANDOMISATION_SCOPES[scope]}): its |map| keeps Spearman {_f(r.abs_rho.mean)} with the "
                f"randomised model's (signed map {_f(r.signed_rho.mean)}), so it reflects the image more "
                "than what the model learned."
            )
    if mq.random_logit_rho.mean is not None and mq.random_logit_rho.mean > SANITY_THRESHOLD:
        lines.append(
            f"{map_name} fails the random-logit check: the map of another class correlates at "
            f"{_f(mq.random_logit_rho.mean)} with the explained class's, so it hardly depends on the class."
        )
    if mq.cross_library is not None:
        c = mq.cross_library
        noise = f"; two shap seeds agree at {_f(mq.noise_floor_rho.mean)}" if mq.noise_floor_rho else ""
        lines.append(
            f"{map_name} vs {c.library}: largest relative difference {c.max_relative_difference:.1e}, "
            f"Spearman {_f(c.rho.mean, 3)}{noise}."
        )
    return lines
