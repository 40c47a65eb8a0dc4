"""The assess stage's budget: what it can afford, chosen in a fixed priority order from the study's counts.

Costs are counted in multiply-adds (MACs) so that the arms' passes can be added up: a forward
row of an arm costs its model's ``forward_macs`` (its config section computes them from the
architecture), an explainer pass (a forward and a backward row) three times that, as
:mod:`experiments.plan` counts them. (A small model runs fewer multiply-adds per second than a
large one on a CPU, where per-call overhead weighs more: measured here, the published CNN at
224 px about 3 billion a second in shap's passes, ResNet50 about 45; so the budget counts a small
model's work as cheaper than it is, and buys sanity images only where they give a verdict.)
The budget is ``assess.budget`` times the explain stages' cost: every explained method's passes
for one map per image (the predicted class: what the explain stage runs at least), every arm.
Nothing here is measured, so the same study always makes the same choice, on every machine.

What every assessment runs (the base) runs whatever the budget: each assessed method's
deletion and insertion curves and one random pixel order on every explained image, at
``assess.steps``, and the baseline method's maps. The budget buys what goes beyond it, in this
order (the report states it):

1. **sanity images**: the randomisation cascade, the random-logit check and the cross-check of
   every assessed method, first for each arm (cheapest first) as many images as a verdict of its
   family of tests needs (:func:`common.stats.images_needed`; where the budget or the explained
   images cannot give that many, none: fewer could not give a verdict), then one more image at a
   time, arm by arm, up to every explained image;
2. **ceiling images**: a second draw of each sampled method's map on one more explained image
   (the agreement's ceiling and the Monte Carlo error), arm by arm, up to all of them;
3. **random orders**: one more random pixel order of every explained image, arm by arm, up to
   ``assess.random_orders``.

Settings given as numbers (``n_sanity``, ``random_orders`` in the config) are taken as given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.config import StudyConfig, selected_arms
from common.registry import METHODS, ArmSpec
from common.stats import images_needed
from experiments.layout import assessed_methods

PRIORITIES = (
    "sanity images (randomisation cascade, random logit, cross-check): first as many as a verdict needs, "
    "cheapest arm first, then one image at a time",
    "ceiling images (a second draw of each sampled method), one image at a time",
    "random pixel orders, one order at a time",
)
MAX_RANDOM_ORDERS = 10  # the most random orders the budget buys when the config leaves them to it


@dataclass(frozen=True)
class AssessPlan:
    """What one arm's assess stage runs."""

    n_sanity: int  # explained images of the sanity checks (the first of layout.spread_order)
    n_ceiling: int  # explained images with a second draw of each sampled method (>= n_sanity)
    random_orders: int  # random pixel orders per image
    steps: int  # steps of each deletion and insertion curve
    macs: float  # what it costs, in multiply-adds
    base_macs: float  # of which the base (outside the budget)
    budget_macs: float  # the whole study's budget for what goes beyond the bases (every arm's share it)


@dataclass
class _ArmCosts:
    """One arm's unit costs, in multiply-adds."""

    spec: ArmSpec
    base: float
    sanity_image: float
    ceiling_image: float
    random_order: float


def _arm_costs(cfg: StudyConfig, spec: ArmSpec, n_explain: int, n_classes: int, image_size: int) -> _ArmCosts:
    e, a = cfg.explain, cfg.assess
    row = float(cfg.arm(spec.key).forward_macs(image_size, n_classes))
    per_map = {m: METHODS[m].passes(1, 1, e.n_background, e.nsamples) * 3 * row for m in assessed_methods(cfg)}
    curve_rows = (a.steps + 1) * 2 * n_explain  # deletion and insertion, every step, every image
    base = (len(per_map) + 1) * curve_rows * row  # the methods' curves and one random order
    base += sum(n_explain * cost for m, cost in per_map.items() if m not in e.methods)  # unexplained methods
    maps_per_sanity_image = len(a.randomise) + (0 if e.classes == "all" else 1)  # the cascade, the random logit
    cross = 1 if (a.cross_check and spec.independent_library) else 0
    sanity = sum(
        cost * (maps_per_sanity_image + (1 if METHODS[m].sampled else 0) + (cross if not METHODS[m].baseline else 0))
        for m, cost in per_map.items()
    )
    ceiling = sum(cost for m, cost in per_map.items() if METHODS[m].sampled)
    return _ArmCosts(spec, base, sanity, ceiling, curve_rows * row)


def family_size(cfg: StudyConfig, spec: ArmSpec) -> int:
    """The tests an arm's verdicts are corrected for together (as experiments/evaluate_quality.py
    makes them): per assessed method faithfulness (2), the randomisation cascade, the random logit,
    and a sampled method's Monte Carlo and cross-library tests; two per pair of methods."""
    a, methods = cfg.assess, assessed_methods(cfg)
    per_method = 2 + len(a.randomise) + 1
    sampled = [m for m in methods if METHODS[m].sampled]
    cross = len(sampled) if (a.cross_check and spec.independent_library) else 0
    return len(methods) * per_method + len(sampled) + cross + len(methods) * (len(methods) - 1)


def explain_macs(cfg: StudyConfig, n_explain: int, n_classes: int, image_size: int) -> float:
    """The explain stages' cost in multiply-adds: every arm's explained methods, one map per image."""
    e = cfg.explain
    total = 0.0
    for spec in selected_arms(cfg):
        row = float(cfg.arm(spec.key).forward_macs(image_size, n_classes))
        total += sum(n_explain * METHODS[m].passes(1, 1, e.n_background, e.nsamples) * 3 * row for m in e.methods)
    return total


def allocate(cfg: StudyConfig, n_explain: int, n_classes: int, image_size: int) -> dict[str, AssessPlan]:
    """Each selected arm's assessment (arm key -> plan), chosen within ``assess.budget`` of the
    explain stages' cost in the priority order of the module's docstring."""
    a = cfg.assess
    costs = [_arm_costs(cfg, spec, n_explain, n_classes, image_size) for spec in selected_arms(cfg)]
    budget = a.budget * explain_macs(cfg, n_explain, n_classes, image_size)
    left = budget
    fixed_sanity = a.n_sanity is not None
    sanity = {c.spec.key: min(a.n_sanity, n_explain) if fixed_sanity else 0 for c in costs}
    if fixed_sanity:
        left -= sum(c.sanity_image * sanity[c.spec.key] for c in costs)
    else:
        for c in sorted(costs, key=lambda c: c.sanity_image):  # a verdict's worth of images, or none
            block = images_needed(family_size(cfg, c.spec))
            if block <= n_explain and block * c.sanity_image <= left:
                sanity[c.spec.key], left = block, left - block * c.sanity_image
        left = _fill([c for c in costs if sanity[c.spec.key]], sanity, "sanity_image", n_explain, left)
    ceiling = dict(sanity)
    left = _fill(costs, ceiling, "ceiling_image", n_explain, left)
    fixed_orders = a.random_orders is not None
    orders = {c.spec.key: a.random_orders if fixed_orders else 1 for c in costs}
    if not fixed_orders:
        left = _fill(costs, orders, "random_order", MAX_RANDOM_ORDERS, left)
    plans = {}
    for c in costs:
        key = c.spec.key
        spent = (
            c.base
            + sanity[key] * c.sanity_image
            + (ceiling[key] - sanity[key]) * c.ceiling_image
            + (orders[key] - 1) * c.random_order
        )
        plans[key] = AssessPlan(sanity[key], ceiling[key], orders[key], a.steps, spent, c.base, budget)
    return plans


def _fill(costs: list[_ArmCosts], counts: dict[str, int], unit: str, most: int, left: float) -> float:
    """Add one unit at a time to each arm in turn (``counts``, in place) while the budget lasts
    and no arm has ``most``; return what is left."""
    growing = True
    while growing:
        growing = False
        for c in costs:
            price = getattr(c, unit)
            if counts[c.spec.key] < most and price <= left:
                counts[c.spec.key] += 1
                left -= price
                growing = True
    return left


def arm_explain_macs(cfg: StudyConfig, spec: ArmSpec, n_explain: int, n_classes: int, image_size: int) -> float:
    """One arm's explain stages in multiply-adds (one map per image per explained method)."""
    e = cfg.explain
    row = float(cfg.arm(spec.key).forward_macs(image_size, n_classes))
    return sum(n_explain * METHODS[m].passes(1, 1, e.n_background, e.nsamples) * 3 * row for m in e.methods)


def settings_for(cfg: StudyConfig, n_explain: int, needed: int) -> tuple[StudyConfig, str]:
    """The config whose every verdict has ``needed`` images, and its command-line flags: at least
    ``needed`` explained images, the sanity checks on ``needed`` of them."""
    explain = dataclasses.replace(cfg.explain, n_explain=max(n_explain, needed))
    assess = dataclasses.replace(cfg.assess, n_sanity=needed)
    flags = f"--n-sanity {needed}" + (f" --n-explain {needed}" if needed > n_explain else "")
    return dataclasses.replace(cfg, explain=explain, assess=assess), flags


def extra_macs(cfg: StudyConfig, n: int, other: StudyConfig, n_other: int, n_classes: int, size: int) -> dict:
    """Arm key -> what ``other`` (with ``n_other`` explained images) costs more than ``cfg`` (with
    ``n``), explain and assess stages, in multiply-adds."""
    out: dict[str, float] = {}
    for config, count, sign in ((other, n_other, 1.0), (cfg, n, -1.0)):
        for spec in selected_arms(config):
            plan = allocate(config, count, n_classes, size)[spec.key]
            out[spec.key] = out.get(spec.key, 0.0) + sign * (
                plan.macs + arm_explain_macs(config, spec, count, n_classes, size)
            )
    return out
