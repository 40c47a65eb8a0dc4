"""The report's findings: one plain sentence per model x method, generated from its verdicts.

A sentence states only what a verdict decided (common/verdicts.py): each claim comes with its
statistic, its reference, the Holm-corrected p-value where it is a test, and the number of
images; a check with too few images says so instead of claiming anything.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.registry import map_title
from common.results import ArmQuality, MethodQuality, Verdict
from common.verdicts import SANITY_THRESHOLD


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    return "p n/a" if p is None else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def findings(quality: Mapping[str, ArmQuality], arm_keys: Mapping[str, str], titles: Mapping[str, str]) -> list[str]:
    """One sentence per model x method (arm name -> its quality; arm name -> key and title)."""
    lines = []
    for name, aq in quality.items():
        for method, mq in aq.methods.items():
            clauses = [_faithfulness(mq.verdicts.get("deletion"), aq, method)]
            clauses += [c for c in (_sanity(mq), _consistency(mq)) if c]
            lines.append(f"{map_title(arm_keys[name], method)} ({titles[name]}): " + "; ".join(clauses) + ".")
    return lines


def _faithfulness(v: Verdict | None, aq: ArmQuality, method: str) -> str:
    if v is None or v.effect is None:
        return "faithfulness not measured"
    effect = f"deletion AUC {_f(abs(v.effect.mean))} {'below' if v.effect.mean < 0 else 'above'} a random order's"
    effect += f", {_p(v.p_holm)} (Holm), n = {v.n}"
    best = " and is the most faithful of this model's maps by deletion" if aq.winners.get("deletion") == method else ""
    return {
        "pass": f"removes the score faster than a random pixel order ({effect}){best}",
        "fail": f"removes the score more slowly than a random pixel order ({effect})",
        "not significant": f"not significantly faster than a random pixel order ({effect})",
        "too few images": f"too few images for a faithfulness verdict (n = {v.n}, needs {v.n_needed})",
    }.get(v.status, f"faithfulness {v.status}")


def _sanity(mq: MethodQuality) -> str | None:
    checks = {k: v for k, v in mq.verdicts.items() if k.startswith("randomisation_") or k == "random_logit"}
    if not checks:
        return None
    failed = [k for k, v in checks.items() if v.status == "fail"]
    few = [v for v in checks.values() if v.status == "too few images"]
    if failed:
        return "fails " + ", ".join(_check(k, checks[k]) for k in failed)
    if few:
        return f"too few images for the sanity checks (n = {few[0].n}, needs {few[0].n_needed})"
    if all(v.status == "pass" for v in checks.values()):
        null = f", null {_f(mq.null.signed_rho.mean)}" if mq.null else ""
        return f"passes the randomisation cascade and the random-logit check (signed ρ below {SANITY_THRESHOLD}{null})"
    return "sanity checks undecided (" + ", ".join(f"{k}: {v.status}" for k, v in checks.items()) + ")"


def _check(key: str, v: Verdict) -> str:
    what = "the random-logit check" if key == "random_logit" else f"model randomisation ({key.split('_', 1)[1]})"
    return f"{what} (signed ρ {_f(v.effect.mean)} > {SANITY_THRESHOLD}, {_p(v.p_holm)}, n = {v.n})"


def _consistency(mq: MethodQuality) -> str | None:
    parts = []
    cross, mc = mq.verdicts.get("cross_library"), mq.verdicts.get("monte_carlo")
    if cross is not None and mq.cross_library is not None:
        c = mq.cross_library
        word = "agrees with" if cross.status == "pass" else "differs from" if cross.status == "fail" else "vs"
        if c.seed_rho is not None:  # a sampled method: read against two draws of shap
            parts.append(f"{word} {c.library} as two draws of shap do (ρ {_f(c.rho.mean)} vs {_f(c.seed_rho.mean)})")
        else:
            parts.append(f"{word} {c.library} (largest relative difference {c.max_relative_difference:.1e})")
    if mc is not None and mc.status == "fail":
        parts.append("its additivity error exceeds its Monte Carlo error")
    return ", ".join(parts) or None
