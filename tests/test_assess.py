"""The assess stage's measures (experiments/assess.py) on the fake NumPy arm (a linear model with known maps),
and their summaries and findings."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from common.config import AssessConfig, StudyConfig
from common.report.findings import findings
from experiments import assess
from experiments.evaluate_quality import summarise_arm
from experiments.layout import sanity_positions
from tests.fake_arm.arm import FakeArm

SIZE = 12


@pytest.fixture
def setup(tiny_images):
    """A linear fake arm whose class-0 logit reads only a 3x3 patch, and six images."""
    x, _ = tiny_images(4, SIZE, seed=0)
    weights = np.zeros((3, SIZE, SIZE, 3))
    weights[0, 4:7, 4:7, :] = 1.0  # class 0: the patch's brightness
    weights[1] = np.random.default_rng(1).normal(0, 0.5, (SIZE, SIZE, 3))
    weights[2] = np.random.default_rng(2).normal(0, 0.5, (SIZE, SIZE, 3))
    arm = FakeArm(weights.reshape(3, -1), np.array([-20.0, 0.0, 0.0]), SIZE, StudyConfig())
    images = x[:6].copy()
    images[:, 4:7, 4:7, :] = 255  # a bright patch: class 0 wins
    background = x[6:10]
    settings = AssessConfig(steps=12, random_orders=3, n_sanity=4)
    classes = arm.predict_proba(images).argmax(1)
    assert (classes == 0).all()
    inputs = assess.make_inputs(images, background, classes, arm.n_classes, settings, seed=0)
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
    changed = _assess(arm, inputs, settings, randomised={"all": lambda: arm.randomized("all", seed=3)})
    assert np.all(np.abs(changed["randomisation_all_signed"]) < 0.5), changed["randomisation_all_signed"]
    assert changed["randomisation_all_abs"].mean() < 0.5


def test_patch_maps_delete_the_score_at_once_and_random_orders_do_not(setup):
    arm, inputs, settings = setup
    result = _assess(arm, inputs, settings)
    random = assess.assess_random(arm, inputs, settings, seed=0)
    # Deep SHAP of the linear patch logit is zero outside the patch: its 9 pixels rank first,
    # and the first step (12 of 144 pixels) removes them all.
    assert (result["deletion"][:, 0] > 0.9).all() and (result["deletion"][:, 1] < 0.1).all()
    assert (random["deletion"][:, :, 1] > 0.5).mean() > 0.7  # a random 1/12 rarely takes the whole patch
    summary = summarise_arm(random, {"deep": result}, n_classes=3)
    deep = summary.methods["deep"]
    assert deep.deletion_auc.mean < summary.random.deletion_auc.mean
    assert deep.deletion_p_vs_random is not None and deep.deletion_p_vs_random < 0.05
    assert deep.deletion_chance_fraction.mean <= 1 / 12 + 1e-9
    assert deep.sparseness.mean > 0.9  # nearly all mass on 9 of 144 pixels


def test_random_logit_and_noise_floor_and_no_cross_check_without_a_library(setup):
    arm, inputs, settings = setup
    deep = _assess(arm, inputs, settings)
    assert (inputs.other_classes != inputs.classes).all()
    # Class 0 reads the patch only; classes 1 and 2 read random weights: unrelated maps.
    assert np.nanmax(np.abs(deep["random_logit_signed"])) < 0.5
    assert "noise_floor" not in deep and "cross_library" not in deep
    gradient = _assess(arm, inputs, settings, method="gradient")
    assert gradient["noise_floor"].shape == (len(inputs.sanity),) and (gradient["noise_floor"] <= 1).all()


def test_findings_name_a_failed_check(setup):
    arm, inputs, settings = setup
    unchanged = {"all": lambda: contextlib.nullcontext(arm)}  # a "randomised" model that did not change fails
    same = _assess(arm, inputs, settings, randomised=unchanged)
    random = assess.assess_random(arm, inputs, settings, seed=0)
    quality = {"fake_linear": summarise_arm(random, {"deep": same}, n_classes=3)}
    lines = findings(quality, {"fake_linear": "fake"}, {"fake_linear": "Fake"})
    assert any("fails the model-randomisation check" in line for line in lines)
    assert not any(line.startswith("No map fails") for line in lines)


@pytest.mark.parametrize(("size", "expected"), [(32, "mean"), (224, "blur")])
def test_insertion_baseline_is_chosen_per_image_size(size, expected):
    assert assess.insertion_baseline(AssessConfig(), size) == expected
    assert assess.insertion_baseline(AssessConfig(insertion_baseline="blur"), 32) == "blur"


def test_sanity_positions_spread_over_the_selection():
    assert sanity_positions(20, 4).tolist() == [0, 6, 13, 19]
    assert sanity_positions(3, 6).tolist() == [0, 1, 2]
    assert sanity_positions(5, None).tolist() == [0, 1, 2, 3, 4]
