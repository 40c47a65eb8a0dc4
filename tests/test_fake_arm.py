"""What is the fake NumPy arm's own (``tests/fake_arm``): a linear model, whose maps are known
in closed form. What every arm must do is checked over it in ``tests/test_arm_contract.py``."""

from __future__ import annotations

import numpy as np

from tests.tolerance import sum_atol, unit_roundoff


def test_gradient_times_input_is_deep_shap_for_a_linear_model(fake_case):
    arm, images, background = fake_case.arm, fake_case.images, fake_case.background
    deep = arm.explain(images, background, "deep", nsamples=0, seed=0)
    gi = arm.explain(images, background, "gradinput", nsamples=0, seed=0)
    # Both are W[k] * (x - mean(background)) / 255 in float64, computed in another order (the
    # mean of B background pixels rounds on the scale of the largest weight times 255 / 255),
    # then each rounded to float32.
    atol = sum_atol(len(background), np.abs(arm.weights).max(), np.float64)
    np.testing.assert_allclose(gi.attributions, deep.attributions, rtol=2 * unit_roundoff(np.float32), atol=atol)
