"""What every arm's assessment hooks must do, checked the same way for each arm.

``tests/test_pytorch_arm.py``, ``tests/test_keras_arm.py`` and ``tests/test_registry.py``
(the fake NumPy arm) call :func:`check_assessment_hooks` on a trained arm of their own.
"""

from __future__ import annotations

import numpy as np

from common.arm import Arm
from common.registry import RANDOMISATION_SCOPES


def check_assessment_hooks(arm: Arm, images: np.ndarray, background: np.ndarray) -> None:
    """One explained class per image, gradient × input, and weight randomisation."""
    n = len(images)
    full = arm.explain(images, background, "deep", nsamples=0, seed=0)
    classes = (full.probabilities.argmax(1) + np.arange(n)) % arm.n_classes  # a mix of classes
    one = arm.explain(images, background, "deep", nsamples=0, seed=0, classes=classes)
    assert one.attributions.shape == (n, 1, *images.shape[1:])
    assert np.array_equal(one.classes, classes[:, None])  # a table with one column
    scale = np.abs(full.attributions).max()
    np.testing.assert_allclose(one.maps_for(classes), full.attributions[np.arange(n), classes], atol=1e-4 * scale)
    np.testing.assert_allclose(one.base_values, full.base_values, rtol=1e-4, atol=1e-4)
    assert one.additivity_errors.shape == (n,) and one.n_maps == n
    assert one.additivity_max_abs_error < 1e-3 * max(1.0, np.abs(one.additivity_deltas).max())

    # Gradient SHAP draws each image's samples from the seed and the image itself, so any
    # selection of classes, images or order gives the maps of the all-class run.
    grad_full = arm.explain(images, background, "gradient", nsamples=6, seed=1)
    grad_scale = np.abs(grad_full.attributions).max()
    grad_one = arm.explain(images, background, "gradient", nsamples=6, seed=1, classes=classes)
    np.testing.assert_allclose(
        grad_one.attributions[:, 0], grad_full.attributions[np.arange(n), classes], atol=1e-4 * grad_scale
    )
    second = np.where(np.arange(n) % 2 == 0, (classes + 1) % arm.n_classes, -1)  # a second class for some images
    table = np.stack([classes, second], axis=1)
    for method, reference in (("deep", full), ("gradient", grad_full)):
        two = arm.explain(images, background, method, nsamples=6, seed=1, classes=table)
        assert two.attributions.shape == (n, 2, *images.shape[1:])
        assert two.n_maps == n + int((second >= 0).sum()) and two.additivity_errors.shape == (two.n_maps,)
        rows, cols = np.nonzero(table >= 0)
        np.testing.assert_allclose(
            two.attributions[rows, cols],
            reference.attributions[rows, table[rows, cols]],
            atol=1e-4 * np.abs(reference.attributions).max(),
        )
        assert not two.attributions[second < 0, 1].any()  # nothing explained, nothing stored
        picked = two.maps_for(np.where(second >= 0, second, classes))  # the second map where there is one
        np.testing.assert_array_equal(picked[second >= 0], two.attributions[second >= 0, 1])
    backwards = arm.explain(images[::-1], background, "gradient", nsamples=6, seed=1, classes=classes[::-1])
    np.testing.assert_allclose(backwards.attributions[::-1], grad_one.attributions, atol=1e-4 * grad_scale)

    # Gradient x (x - mean background): every class, or one per image, consistently.
    before_proba = arm.predict_proba(images)
    gi = arm.explain(images, background, "gradinput", nsamples=0, seed=0)
    gi_one = arm.explain(images, background, "gradinput", nsamples=0, seed=0, classes=classes)
    assert gi.attributions.shape == full.attributions.shape and gi.nsamples is None
    np.testing.assert_allclose(gi_one.attributions[:, 0], gi.attributions[np.arange(n), classes], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gi.outputs, full.outputs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gi.base_values, full.base_values, rtol=1e-4, atol=1e-4)
    assert np.abs(gi.attributions).max() > 0
    # the forward pass that gives gradient x input its base values: logits, or the probabilities
    np.testing.assert_allclose(arm._forward(images, output="logits"), full.outputs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(arm._forward(images, output="probability"), before_proba, rtol=1e-5, atol=1e-6)

    # Randomisation: in place for the block, the same draw for the same seed, the trained
    # weights back after it; the explainers (built above on the trained weights) explain
    # the randomised model inside the block, not a stale copy.
    before = arm.predict_proba(images)
    trained_maps = arm.explain(images, background, "deep", nsamples=0, seed=0, classes=classes)
    for scope in RANDOMISATION_SCOPES:
        weights = arm.learned_weights(scope)
        assert weights and all(isinstance(v, np.ndarray) for v in weights.values())
        with arm.randomized(scope, seed=5) as a:
            new_a, all_a = a.learned_weights(scope), a.learned_weights("all")
            probs_a = a.predict_proba(images)
            random_maps = a.explain(images, background, "deep", nsamples=0, seed=0, classes=classes)
        with arm.randomized(scope, seed=5) as b:
            new_b = b.learned_weights(scope)
        with arm.randomized(scope, seed=6) as other:
            new_other = other.learned_weights(scope)
        assert list(new_a) == list(weights)
        assert all(np.array_equal(new_a[k], new_b[k]) for k in weights)
        assert any(not np.array_equal(new_a[k], new_other[k]) for k in weights)
        changed = [k for k in weights if weights[k].std() > 0]
        assert changed and all(not np.allclose(new_a[k], weights[k]) for k in changed)
        assert not np.allclose(probs_a, before, atol=1e-6)
        assert not np.allclose(random_maps.attributions, trained_maps.attributions)
        # the randomised maps add up to the randomised model's outputs: maps and base values are its own
        assert random_maps.additivity_max_abs_error < 1e-3 * max(1.0, np.abs(random_maps.additivity_deltas).max())
        logits = random_maps.outputs - random_maps.outputs.max(1, keepdims=True)
        softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(softmax, probs_a, rtol=1e-3, atol=1e-5)  # the randomised model's own outputs
        if scope != "all":  # what lies outside the scope is unchanged
            rest = {k: v for k, v in arm.learned_weights("all").items() if k not in weights}
            assert all(np.array_equal(all_a[k], v) for k, v in rest.items())
        assert all(np.array_equal(arm.learned_weights(scope)[k], v) for k, v in weights.items())  # put back
    np.testing.assert_array_equal(arm.predict_proba(images), before)
    again = arm.explain(images, background, "deep", nsamples=0, seed=0, classes=classes)
    np.testing.assert_array_equal(again.attributions, trained_maps.attributions)
