"""The assess stage's measures (experiments/assess.py) on the fake NumPy arm (a linear model with known maps),
and their summaries, verdicts and findings (experiments/evaluate_quality.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from common.config import AssessConfig, StudyConfig
from common.quality.randomisation import input_only_similarity
from common.report.findings import findings
from experiments import assess
from experiments.budget import AssessPlan
from experiments.evaluate_quality import summarise_arm
from experiments.layout import sanity_positions, spread_order
from tests.fake_arm.arm import FakeArm

SIZE = 12
N = 12  # images: enough for a verdict in the fake arm's family of tests


def plan(n_sanity: int, n_ceiling: int | None = None, orders: int = 3, steps: int = 12) -> AssessPlan:
    return AssessPlan(n_sanity, n_sanity if n_ceiling is None else n_ceiling, orders, steps, 0.0, 0.0, 0.0)


@pytest.fixture
def setup(tiny_images):
    """A linear fake arm whose class-0 logit reads only a 3x3 patch, twelve images and their plan."""
    x, _ = tiny_images(8, SIZE, seed=0)
    weights = np.zeros((3, SIZE, SIZE, 3))
    weights[0, 4:7, 4:7, :] = 1.0  # class 0: the patch's brightness
    weights[1] = np.random.default_rng(1).normal(0, 0.5, (SIZE, SIZE, 3))
    weights[2] = np.random.default_rng(2).normal(0, 0.5, (SIZE, SIZE, 3))
    arm = FakeArm(weights.reshape(3, -1), np.array([-20.0, 0.0, 0.0]), SIZE, StudyConfig())
    images = x[:N].copy()
    images[:, 4:7, 4:7, :] = 255  # a bright patch: class 0 wins
    background = x[N : N + 4]
    settings = AssessConfig(steps=12, spacing="linear", random_orders=3, n_sanity=N)
    classes = arm.predict_proba(images).argmax(1)
    assert (classes == 0).all()
    inputs = assess.make_inputs(images, background, classes, classes, arm.n_classes, settings, plan(N), seed=0)
    return arm, inputs, settings


def _assess(arm, inputs, settings, method="deep", randomised=None):
    return assess.assess_method(
        arm, method, None, inputs, settings, nsamples=16, seed=0, output="logits", randomised=randomised or {}
    )


def test_randomisation_check_is_exactly_one_for_an_unchanged_model_and_low_for_a_random_one(setup):
    arm, inputs, settings = setup
    same = _assess(arm, inputs, settings, randomised={"all": lambda: contextlib.nullcontext(arm)})
    np.testing.assert_array_equal(same["randomisation_all_abs"], 1.0)
    np.testing.assert_array_equal(same["randomisation_all_signed"], 1.0)
    np.testing.assert_allclose(same["randomisation_all_ssim"], 1.0)
    changed = _assess(arm, inputs, settings, randomised={"all": lambda: arm.randomized("all", seed=3)})
    assert np.all(np.abs(changed["randomisation_all_signed"]) < 0.5), changed["randomisation_all_signed"]
    assert changed["randomisation_all_abs"].mean() < 0.5


def test_patch_maps_delete_the_score_at_once_and_random_orders_do_not(setup):
    arm, inputs, settings = setup
    result = _assess(arm, inputs, settings)
    random = assess.assess_random(arm, inputs, seed=0)
    # Deep SHAP of the linear patch logit is zero outside the patch: its 9 pixels rank first,
    # and the first step (12 of 144 pixels) removes them all.
    assert (result["deletion"][:, 0] > 0.9).all() and (result["deletion"][:, 1] < 0.1).all()
    assert random["deletion"].shape[0] == 3 and (random["deletion"][:, :, 1] > 0.5).mean() > 0.7
    summary = summarise_arm(random, {"deep": result}, n_classes=3)
    deep = summary.methods["deep"]
    assert deep.deletion_auc.mean < summary.random.deletion_auc.mean
    assert deep.verdicts["deletion"].status == "pass" and deep.verdicts["deletion"].n == N
    assert deep.chance.median <= 1 / 12 + 1e-9 and deep.chance.censored == 0
    assert deep.sparseness.mean > 0.9  # nearly all mass on 9 of 144 pixels


def test_random_logit_second_draws_and_no_cross_check_without_a_library(setup):
    arm, inputs, settings = setup
    deep = _assess(arm, inputs, settings)
    assert (inputs.other_classes != inputs.classes).all()
    # Class 0 reads the patch only; classes 1 and 2 read random weights: unrelated maps.
    assert np.nanmax(np.abs(deep["random_logit_signed"])) < 0.5
    assert "ceiling_rho" not in deep and "cross_library" not in deep  # deterministic, no library
    explained = arm.explain(inputs.images, inputs.background, "gradient", nsamples=16, seed=0, classes=inputs.classes)
    gradient = assess.assess_method(
        arm, "gradient", explained, inputs, settings, nsamples=16, seed=0, output="logits", randomised={}
    )
    assert gradient["ceiling_rho"].shape == (N,) and (gradient["ceiling_rho"] <= 1).all()
    # the first draw is the explain stage's: its maps at the true (here: predicted) class, its sums' gaps
    np.testing.assert_allclose(gradient["true_maps"], explained.attributions[:, 0].sum(-1), rtol=1e-6)
    sums = explained.attributions[:, 0].astype(np.float64).reshape(N, -1).sum(1)
    np.testing.assert_allclose(gradient["additivity_error"], sums - gradient["additivity_delta"], atol=1e-5)
    # sampled maps add up to f(x) - E f only in expectation: two draws' sums differ
    assert gradient["draw_difference"].shape == (N,) and np.abs(gradient["draw_difference"]).max() > 0
    assert gradient["true_maps"].shape == (N, SIZE, SIZE)


def test_findings_are_one_sentence_per_model_and_method_and_name_a_failed_check(setup):
    arm, inputs, settings = setup
    unchanged = {"all": lambda: contextlib.nullcontext(arm)}  # a "randomised" model that did not change fails
    same = _assess(arm, inputs, settings, randomised=unchanged)
    gradient = _assess(arm, inputs, settings, method="gradient", randomised=unchanged)
    random = assess.assess_random(arm, inputs, seed=0)
    null = input_only_similarity(inputs.images, inputs.background, seed=0)
    quality = {"fake_linear": summarise_arm(random, {"deep": same, "gradient": gradient}, 3, null)}
    lines = findings(quality, {"fake_linear": "fake"}, {"fake_linear": "Fake"})
    assert len(lines) == 2 and all(line.count(". ") == 0 for line in lines)  # one sentence each
    assert all("fails model randomisation (all)" in line for line in lines)


@pytest.mark.parametrize(("size", "expected"), [(32, "mean"), (224, "blur")])
def test_insertion_baseline_is_chosen_per_image_size(size, expected):
    assert assess.insertion_baseline(AssessConfig(), size) == expected
    assert assess.insertion_baseline(AssessConfig(insertion_baseline="blur"), 32) == "blur"


def test_sanity_positions_are_nested_prefixes_spread_over_the_selection():
    assert sanity_positions(20, 4).tolist() == [0, 6, 10, 19]
    assert sanity_positions(3, 6).tolist() == [0, 1, 2]
    assert sanity_positions(5, None).tolist() == [0, 1, 2, 3, 4]
    order = spread_order(20)
    assert sorted(order.tolist()) == list(range(20))
    for k in range(1, 20):  # a budget that buys one image more keeps the ones it had
        assert set(sanity_positions(20, k)) <= set(sanity_positions(20, k + 1))
