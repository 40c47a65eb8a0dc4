"""The assess stage's budget (experiments/budget.py): what it buys, in its priority order, from counts alone."""

from __future__ import annotations

import pytest

from common.config import load_config, selected_arms
from common.stats import images_needed
from experiments.budget import _arm_costs, allocate, explain_macs, extra_macs, family_size, settings_for


def _cfg(**overrides):
    return load_config(overrides={f"assess.{k}": v for k, v in overrides.items()})


def test_the_same_counts_give_the_same_choice():
    assert allocate(_cfg(), 20, 10, 32) == allocate(_cfg(), 20, 10, 32)


def test_a_cheap_arm_gets_a_verdicts_worth_of_sanity_images_before_anything_else():
    plans = allocate(_cfg(), 20, 10, 32)  # the default study: a small CNN beside a ResNet50
    cnn, resnet = plans["pytorch"], plans["keras"]
    assert cnn.n_sanity == 20 and cnn.n_ceiling == 20 and cnn.random_orders == 10
    # ResNet50's sanity checks cost far more than a quarter of the explain stages: none, rather than too few
    needed = images_needed(family_size(_cfg(), next(s for s in selected_arms(_cfg()) if s.key == "keras")))
    costs = {c.spec.key: c for c in (_arm_costs(_cfg(), s, 20, 10, 32) for s in selected_arms(_cfg()))}
    assert needed * costs["keras"].sanity_image > 0.25 * explain_macs(_cfg(), 20, 10, 32)
    assert resnet.n_sanity == 0 and resnet.random_orders == 1


def test_spending_stays_within_the_budget_beyond_the_base():
    for budget in (0.0, 0.25, 1.0, 5.0):
        plans = allocate(_cfg(budget=budget), 20, 10, 32)
        extra = sum(p.macs - p.base_macs for p in plans.values())
        assert extra <= budget * explain_macs(_cfg(), 20, 10, 32) + 1e-6
    nothing = allocate(_cfg(budget=0.0), 20, 10, 32)
    assert all(p.n_sanity == 0 and p.n_ceiling == 0 and p.random_orders == 1 for p in nothing.values())
    everything = allocate(_cfg(budget=100.0), 20, 10, 32)
    assert all(p.n_sanity == 20 and p.n_ceiling == 20 and p.random_orders == 10 for p in everything.values())


def test_a_larger_budget_buys_in_the_stated_order():
    previous = None
    for budget in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
        plan = allocate(_cfg(budget=budget), 20, 10, 32)["keras"]
        if previous is not None:  # never fewer images or orders with more budget
            assert (plan.n_sanity, plan.n_ceiling, plan.random_orders) >= (
                previous.n_sanity,
                previous.n_ceiling,
                previous.random_orders,
            )
            if plan.random_orders > 1:  # orders come last: only once every image has its second draws
                assert plan.n_ceiling == 20
        previous = plan


def test_settings_given_as_numbers_are_taken_as_given():
    plans = allocate(_cfg(n_sanity=3, random_orders=2, budget=0.0), 20, 10, 32)
    assert all(p.n_sanity == 3 and p.random_orders == 2 for p in plans.values())


def test_what_more_images_cost_is_the_difference_of_two_allocations():
    cfg = _cfg()
    other, flags = settings_for(cfg, 6, 10)
    assert flags == "--n-sanity 10 --n-explain 10" and other.assess.n_sanity == 10
    extra = extra_macs(cfg, 6, other, 10, 3, 64)
    assert set(extra) == {"pytorch", "keras"} and all(v > 0 for v in extra.values())


@pytest.mark.parametrize(("size", "classes"), [(32, 10), (224, 3)])
def test_forward_multiply_adds_are_the_architectures(size, classes):
    cfg = load_config()
    cnn, resnet = cfg.arm("pytorch").forward_macs(size, classes), cfg.arm("keras").forward_macs(size, classes)
    if size == 224:  # ResNet50's published figure: about 3.9 billion multiply-adds at 224 px
        assert 3.7e9 < resnet < 4.2e9
    assert resnet > 100 * cnn


@pytest.mark.pytorch
def test_the_cnns_multiply_adds_are_its_layers():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from pytorch_impl.cnn import build_model

    model = build_model(10, 32).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert counter.get_total_flops() == 2 * load_config().arm("pytorch").forward_macs(32, 10)
    assert load_config().arm("keras_cnn").forward_macs(32, 10) == load_config().arm("pytorch").forward_macs(32, 10)


@pytest.mark.pytorch
@pytest.mark.parametrize("size", [32, 224])
def test_resnet50s_multiply_adds_are_its_layers(size):
    # the PyTorch ResNet50 is built layer for layer as Keras's: one count for both arms
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from pytorch_impl.resnet50 import build_model

    model = build_model(3, size).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last))
    cfg = load_config()
    assert counter.get_total_flops() == 2 * cfg.arm("pytorch_resnet50").forward_macs(size, 3)
    assert cfg.arm("keras").forward_macs(size, 3) == cfg.arm("pytorch_resnet50").forward_macs(size, 3)
