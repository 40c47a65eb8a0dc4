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
    assert np.array_equal(one.classes, classes)
    scale = np.abs(full.attributions).max()
    np.testing.assert_allclose(one.maps_for(classes), full.attributions[np.arange(n), classes], atol=1e-4 * scale)
    np.testing.assert_allclose(one.base_values, full.base_values, rtol=1e-4, atol=1e-4)
    assert one.additivity_errors.shape == (n, 1)
    assert one.additivity_max_abs_error < 1e-3 * max(1.0, np.abs(one.additivity_deltas).max())

    # Gradient SHAP: shap reseeds per explained class and draws image by image, so one class
    # for every image draws exactly what the all-class run drew for that class.
    same = np.full(n, classes[0])
    grad_full = arm.explain(images, background, "gradient", nsamples=6, seed=1)
    grad_one = arm.explain(images, background, "gradient", nsamples=6, seed=1, classes=same)
    np.testing.assert_allclose(
        grad_one.attributions[:, 0],
        grad_full.attributions[:, classes[0]],
        atol=1e-4 * np.abs(grad_full.attributions).max(),
    )

    # Gradient x (x - mean background): every class, or one per image, consistently.
    gi = arm.explain(images, background, "gradinput", nsamples=0, seed=0)
    gi_one = arm.explain(images, background, "gradinput", nsamples=0, seed=0, classes=classes)
    assert gi.attributions.shape == full.attributions.shape and gi.nsamples is None
    np.testing.assert_allclose(gi_one.attributions[:, 0], gi.attributions[np.arange(n), classes], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gi.outputs, full.outputs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gi.base_values, full.base_values, rtol=1e-4, atol=1e-4)
    assert np.abs(gi.attributions).max() > 0

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
