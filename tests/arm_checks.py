"""The arm contract as named checks, in the style of scikit-learn's ``check_estimator``.

Each ``check_*`` function asserts one property of the interface every arm implements
(``common/arm.py``) on a trained arm and its data (an :class:`tests.arm_cases.ArmCase`);
``tests/test_arm_contract.py`` runs every check over every arm, each as its own test. A check
leaves the arm as it found it. What only one framework does is tested in its own test file.

Float comparisons use the case's tolerance (:meth:`ArmCase.atol`): the bound of two float
evaluations of the arm's network on the scale of what is compared (``tests/tolerance.py``),
since the compared values come from differently composed batches or another code path.

The maps of the case's images for every class and for one mixed class per image
(:func:`_reference`) are computed once per case, kept read only and shared by the checks
that read them: explaining costs, and a Keras arm's first call of each traced graph more.
"""

from __future__ import annotations

import random
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from common.arm import HISTORY_KEYS
from common.explanation import Explanation
from common.registry import METHODS, RANDOMISATION_SCOPES
from tests.arm_cases import ArmCase
from tests.tolerance import network_atol, softmax_atol, sum_atol, unit_roundoff

Check = Callable[[ArmCase], None]
NSAMPLES = 6  # Gradient SHAP samples per image: few, the checks test plumbing, not convergence
SEED = 1  # the explanations' seed


# ------------------------------------------------------------------------------- helpers


def _explain(case: ArmCase, method: str, images: np.ndarray | None = None, **kwargs) -> Explanation:
    images = case.images if images is None else images
    kwargs = {"nsamples": NSAMPLES, "seed": SEED, **kwargs}
    return case.arm.explain(images, case.background, method, **kwargs)


def _mixed_classes(case: ArmCase) -> np.ndarray:
    """One class per explained image, a mix of predicted and other classes."""
    n = len(case.images)
    return (case.image_logits.argmax(1) + np.arange(n)) % case.arm.n_classes


def _reference(case: ArmCase, method: str, *, one_class: bool = False) -> Explanation:
    """``method``'s logit maps of the case's images, every class (or with ``one_class`` the
    :func:`_mixed_classes`), computed once per case from the trained arm; read only."""
    key = (method, one_class)
    if key not in case.references:
        e = _explain(case, method, classes=_mixed_classes(case) if one_class else None)
        for array in (e.attributions, e.base_values, e.outputs, e.probabilities):
            array.setflags(write=False)
        case.references[key] = e
    return case.references[key]


def _same_maps(case: ArmCase, actual: np.ndarray, expected: np.ndarray) -> None:
    """The same maps computed in differently composed passes: within the network's bound on
    the scale of the maps."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=case.atol(np.abs(expected).max()))


def _logit_atol(case: ArmCase, logits: np.ndarray) -> float:
    """The bound of two evaluations of ``logits``, on their scale."""
    return case.atol(np.abs(logits).max())


def _additivity_atol(case: ArmCase, e: Explanation) -> np.ndarray:
    """How far a map's sum may lie from f(x) - E[f(background)] where the method is exact
    (Deep SHAP), per map.

    In exact arithmetic the sum is exact. In the model's float type each map's attributions
    carry the rounding of the backward pass through the network, whose layers' sums round on
    the scale of the map's absolute contributions (sum |a_i|), and of their mean over the B
    background images; each attribution is then rounded to float32 once (u sum |a_i|). The
    sum over the pixels is taken in float64 (``Explanation.additivity_errors``): it adds
    nothing to speak of. f(x) and E[f(background)] each carry the network's bound on their
    own scale, and the mean over B of the latter its rounding."""
    rows, cols = np.nonzero(e.explained_classes >= 0)
    absolute = np.abs(e.attributions[rows, cols].reshape(len(rows), -1).astype(np.float64)).sum(-1)
    outputs = max(np.abs(e.outputs).max(), np.abs(e.base_values).max())
    b = e.n_background
    return (
        np.array([network_atol(case.fan_ins, a, case.dtype) for a in absolute])
        + sum_atol(b, absolute, case.dtype)
        + unit_roundoff(np.float32) * absolute
        + case.atol(outputs)
        + sum_atol(b, outputs, case.dtype)
    )


def _assert_additive(case: ArmCase, e: Explanation) -> None:
    bound = _additivity_atol(case, e)
    errors = e.additivity_errors
    assert errors.shape == bound.shape == (e.n_maps,)
    assert (errors <= bound).all(), (errors, bound)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def _weights_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _needs_output(output: str) -> Callable[[Check], Check]:
    """Mark a check that explains ``output``: it runs only for arms that explain it."""

    def mark(check: Check) -> Check:
        check.output = output
        return check

    return mark


# ------------------------------------------------------------------------------- prediction


def check_predict_proba_gives_float32_probabilities_of_every_class(case: ArmCase) -> None:
    arm, images = case.arm, case.images
    p = arm.predict_proba(images)
    assert p.dtype == np.float32 and p.shape == (len(images), arm.n_classes)
    assert ((p >= 0) & (p <= 1)).all()
    empty = arm.predict_proba(images[:0])
    assert empty.dtype == np.float32 and empty.shape == (0, arm.n_classes)
    with pytest.raises(ValueError, match="NHWC"):
        arm.predict_proba(images.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="NHWC"):
        arm.predict_proba(images.astype(np.float32))


def check_probabilities_sum_to_one(case: ArmCase) -> None:
    arm = case.arm
    p = arm.predict_proba(np.concatenate([case.data.x_train, case.data.x_val]))
    # K float32 probabilities that add up to 1 before their rounding (and a softmax's own)
    np.testing.assert_allclose(p.sum(1), 1, rtol=0, atol=sum_atol(arm.n_classes, 1.0) + softmax_atol(0))


def check_forward_gives_the_logits_and_the_probabilities(case: ArmCase) -> None:
    """``_forward``, the forward pass behind gradient x input's base values."""
    arm, images = case.arm, case.images
    atol = _logit_atol(case, case.image_logits)
    np.testing.assert_allclose(arm._forward(images, output="logits"), case.image_logits, rtol=0, atol=atol)
    probabilities = arm._forward(images, output="probability")
    np.testing.assert_allclose(probabilities, arm.predict_proba(images), rtol=0, atol=softmax_atol(atol))


# ------------------------------------------------------------------------------- training, saving


def check_fit_history_has_every_key_and_the_best_epoch(case: ArmCase) -> None:
    result, info = case.result, case.arm.info()
    assert tuple(result.history) == HISTORY_KEYS
    assert all(len(v) == case.epochs and np.isfinite(v).all() for v in result.history.values())
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]
    assert result.best_val_epoch == int(np.argmin(result.history["val_loss"])) + 1
    assert result.train_seconds > 0
    assert all(result.info.get(k) == v for k, v in info.items()), (result.info, info)  # the arm's facts recorded
    assert result.fallbacks == case.arm.fallbacks(result.info)


def check_save_then_load_predicts_identically(case: ArmCase) -> None:
    arm = case.arm
    folder = Path(tempfile.mkdtemp(dir=case.scratch))
    arm.save(folder / arm.spec.model_filename)
    assert sorted(p.name for p in folder.iterdir()) == list(case.saved_files)  # no temporary file left

    loaded = case.load(folder / arm.spec.model_filename)
    assert type(loaded) is type(arm)
    assert _weights_equal(case.state(loaded), case.state(arm))  # every tensor the model holds
    images = np.concatenate([case.data.x_train, case.data.x_val])
    probabilities = loaded.predict_proba(images)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(images), arm.n_classes)
    np.testing.assert_array_equal(probabilities, arm.predict_proba(images))
    np.testing.assert_array_equal(loaded._forward(images, output="logits"), arm._forward(images, output="logits"))
    assert loaded.info() == arm.info()


# ------------------------------------------------------------------------------- explaining


def check_explain_rejects_unknown_methods_outputs_and_wrong_shapes(case: ArmCase) -> None:
    arm, x = case.arm, case.images[:2]
    with pytest.raises(ValueError, match="method"):
        arm.explain(x, x, "kernel", nsamples=1, seed=0)
    with pytest.raises(ValueError, match="output"):
        arm.explain(x, x, "deep", nsamples=1, seed=0, output="softmax")
    with pytest.raises(ValueError, match="images.*NHWC"):
        arm.explain(x[:, : arm.image_size // 2], x, "deep", nsamples=1, seed=0)
    with pytest.raises(ValueError, match="background.*NHWC"):
        arm.explain(x, x.astype(np.float32), "deep", nsamples=1, seed=0)
    with pytest.raises(ValueError, match="classes"):
        arm.explain(x, x, "deep", nsamples=1, seed=0, classes=np.array([0, arm.n_classes]))
    with pytest.raises(ValueError, match="classes"):
        arm.explain(x, x, "deep", nsamples=1, seed=0, classes=np.array([0]))


def check_deep_shap_is_additive_for_every_image_and_class(case: ArmCase) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. shap's "unrecognized nn.Module"
        e = _explain(case, "deep")
    n, k = len(case.images), case.arm.n_classes
    assert isinstance(e, Explanation)
    assert (e.method, e.output, e.nsamples, e.n_background) == ("deep", "logits", None, len(case.background))
    assert e.attributions.shape == (n, k, *case.images.shape[1:]) and e.attributions.dtype == np.float32
    assert e.base_values.dtype == e.outputs.dtype == e.probabilities.dtype == np.float32
    assert e.n_maps == n * k and e.seconds > 0
    _assert_additive(case, e)  # each (image, class) map adds up to that class's output: the class axis is right
    assert np.abs(e.additivity_deltas).max() > 10 * _additivity_atol(case, e).max()  # and that says something


def check_outputs_are_the_models_logits_and_probabilities(case: ArmCase) -> None:
    atol = _logit_atol(case, case.image_logits)
    probabilities = case.arm.predict_proba(case.images)
    for method in METHODS:
        e = _reference(case, method)
        np.testing.assert_allclose(e.outputs, case.image_logits, rtol=0, atol=atol, err_msg=method)
        np.testing.assert_allclose(e.probabilities, probabilities, rtol=0, atol=softmax_atol(atol), err_msg=method)


def check_base_values_are_the_mean_background_logits(case: ArmCase) -> None:
    logits = case.background_logits
    # B logits, each within the network's bound, averaged in float32
    atol = _logit_atol(case, logits) + sum_atol(len(logits), np.abs(logits).max())
    for method in METHODS:
        np.testing.assert_allclose(_reference(case, method).base_values, logits.mean(0), rtol=0, atol=atol)


def check_explaining_is_deterministic_per_seed(case: ArmCase) -> None:
    """The same seed gives the same maps; another seed other maps where the method samples."""
    for method, spec in METHODS.items():
        reference = _reference(case, method).attributions
        assert np.array_equal(_explain(case, method).attributions, reference), method
        if spec.sampled:
            assert not np.array_equal(_explain(case, method, seed=SEED + 1).attributions, reference), method


def check_gradient_shap_gives_finite_maps_with_signal(case: ArmCase) -> None:
    e = _reference(case, "gradient")
    assert isinstance(e, Explanation)
    assert (e.method, e.output, e.nsamples, e.n_background) == ("gradient", "logits", NSAMPLES, len(case.background))
    assert e.attributions.shape == (len(case.images), case.arm.n_classes, *case.images.shape[1:])
    assert e.attributions.dtype == np.float32 and np.isfinite(e.attributions).all()
    predicted = e.probabilities.argmax(1)
    assert all(np.abs(e.attributions[i, k]).max() > 0 for i, k in enumerate(predicted))


def check_explaining_restores_the_global_random_state(case: ArmCase) -> None:
    """shap reseeds NumPy's global generator (Gradient SHAP's rseed); ``explain`` gives it,
    and Python's, back."""
    np.random.seed(99)
    random.seed(99)
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    _explain(case, "gradient")
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state


@_needs_output("probability")
def check_probability_output_explains_the_softmax(case: ArmCase) -> None:
    e = _explain(case, "gradient", output="probability")
    assert e.output == "probability" and e.attributions.shape[:2] == (len(case.images), case.arm.n_classes)
    np.testing.assert_array_equal(e.outputs, e.probabilities)  # the explained quantity is the probability
    # the mean over B background images of K probabilities that each add up to 1 (to a softmax's rounding)
    n_terms = e.n_background * case.arm.n_classes
    np.testing.assert_allclose(e.base_values.sum(), 1, rtol=0, atol=sum_atol(n_terms, 1.0) + softmax_atol(0))


def check_one_class_per_image_equals_the_all_class_maps(case: ArmCase) -> None:
    n, classes = len(case.images), _mixed_classes(case)
    for method, spec in METHODS.items():
        every, one = _reference(case, method), _reference(case, method, one_class=True)
        assert one.attributions.shape == (n, 1, *case.images.shape[1:]), method
        assert np.array_equal(one.classes, classes[:, None]) and one.n_maps == n  # a table with one column
        assert one.additivity_errors.shape == (n,)
        _same_maps(case, one.maps_for(classes), every.attributions[np.arange(n), classes])
        np.testing.assert_allclose(
            one.base_values, every.base_values, rtol=0, atol=case.atol(np.abs(every.base_values).max())
        )
        if spec.additive:
            _assert_additive(case, one)


def check_class_tables_with_minus_one_explain_only_the_given_classes(case: ArmCase) -> None:
    n, classes = len(case.images), _mixed_classes(case)
    second = np.where(np.arange(n) % 2 == 0, (classes + 1) % case.arm.n_classes, -1)  # a second class for some
    table = np.stack([classes, second], axis=1)
    rows, cols = np.nonzero(table >= 0)
    for method, spec in METHODS.items():
        every = _reference(case, method)
        two = _explain(case, method, classes=table)
        assert two.attributions.shape == (n, 2, *case.images.shape[1:]), method
        assert two.n_maps == n + int((second >= 0).sum()) and two.additivity_errors.shape == (two.n_maps,)
        _same_maps(case, two.attributions[rows, cols], every.attributions[rows, table[rows, cols]])
        assert not two.attributions[second < 0, 1].any(), method  # nothing explained, nothing stored
        picked = two.maps_for(np.where(second >= 0, second, classes))  # the second map where there is one
        np.testing.assert_array_equal(picked[second >= 0], two.attributions[second >= 0, 1])
        if spec.additive:
            _assert_additive(case, two)


def check_maps_do_not_depend_on_image_order(case: ArmCase) -> None:
    """Sampled methods draw each image's samples from the seed and the image itself."""
    classes = _mixed_classes(case)
    for method in METHODS:
        backwards = _explain(case, method, case.images[::-1], classes=classes[::-1])
        _same_maps(case, backwards.attributions[::-1], _reference(case, method, one_class=True).attributions)


def check_gradient_times_input_is_the_gradient_times_the_offset(case: ArmCase) -> None:
    images, k = case.images, case.arm.n_classes
    e = _reference(case, "gradinput")
    assert e.attributions.shape == (len(images), k, *images.shape[1:]) and e.nsamples is None
    offset = images.astype(np.float64) - case.background.astype(np.float64).mean(0)
    for c in range(k):
        expected = case.gradients(images, np.full(len(images), c)) * offset  # from the framework's own autodiff
        _same_maps(case, e.attributions[:, c], expected)
    assert np.abs(e.attributions).max() > 0


def check_explain_independently_gives_the_librarys_maps_or_none(case: ArmCase) -> None:
    arm, classes = case.arm, _mixed_classes(case)
    theirs = arm.explain_independently(case.images, case.background, "deep", nsamples=0, seed=0, classes=classes)
    if arm.independent_library is None:
        assert theirs is None
        return
    assert isinstance(theirs, Explanation) and theirs.attributions.shape == (len(classes), 1, *case.images.shape[1:])
    assert np.array_equal(theirs.classes, classes[:, None]) and theirs.output == "logits"


def check_explaining_leaves_the_model_untouched(case: ArmCase) -> None:
    arm = case.arm
    state, probabilities = case.state(arm), arm.predict_proba(case.images)
    classes = _mixed_classes(case)
    table = np.stack([classes, np.full_like(classes, -1)], axis=1)  # two passes: every image, then none
    for method in METHODS:
        _explain(case, method, classes=table)
    arm.explain_independently(case.images, case.background, "deep", nsamples=0, seed=0, classes=classes)
    assert _weights_equal(case.state(arm), state)
    np.testing.assert_array_equal(arm.predict_proba(case.images), probabilities)


# ------------------------------------------------------------------------------- randomisation


def check_randomisation_draws_the_same_weights_per_seed_and_others_across_seeds(case: ArmCase) -> None:
    arm = case.arm
    for scope in RANDOMISATION_SCOPES:
        weights, every = arm.learned_weights(scope), arm.learned_weights("all")
        assert weights and all(isinstance(v, np.ndarray) for v in weights.values())
        with arm.randomized(scope, seed=5) as a:
            new_a, all_a = a.learned_weights(scope), a.learned_weights("all")
        with arm.randomized(scope, seed=5) as b:
            new_b = b.learned_weights(scope)
        with arm.randomized(scope, seed=6) as other:
            new_other = other.learned_weights(scope)
        assert list(new_a) == list(weights)
        assert _weights_equal(new_a, new_b)
        assert any(not np.array_equal(new_a[k], new_other[k]) for k in weights)
        redrawn = [k for k in weights if weights[k].std() > 0]
        assert redrawn and all((new_a[k] != weights[k]).mean() > 0.5 for k in redrawn)  # fresh draws
        outside = {k: v for k, v in every.items() if k not in weights}  # what lies outside the scope is unchanged
        assert all(np.array_equal(all_a[k], v) for k, v in outside.items())


def check_randomisation_puts_the_trained_weights_back(case: ArmCase) -> None:
    arm = case.arm
    state, probabilities = case.state(arm), arm.predict_proba(case.images)
    trained_maps = _reference(case, "deep", one_class=True).attributions
    for scope in RANDOMISATION_SCOPES:
        with arm.randomized(scope, seed=5) as a:
            _explain(case, "deep", classes=_mixed_classes(case))  # the explainers serve the randomised weights
            a.predict_proba(case.images)
        assert _weights_equal(case.state(arm), state), scope
    np.testing.assert_array_equal(arm.predict_proba(case.images), probabilities)
    np.testing.assert_array_equal(_explain(case, "deep", classes=_mixed_classes(case)).attributions, trained_maps)


def check_explainers_follow_the_randomised_weights(case: ArmCase) -> None:
    """The explainers, built on the trained weights, explain the randomised model inside the
    block (the weights are replaced in place), not a stale copy."""
    arm, classes = case.arm, _mixed_classes(case)
    probabilities = arm.predict_proba(case.images)
    trained = {method: _reference(case, method, one_class=True) for method in METHODS}  # explainers built
    for scope in RANDOMISATION_SCOPES:
        with arm.randomized(scope, seed=5) as a:
            random_probabilities = a.predict_proba(case.images)
            random_maps = {method: _explain(case, method, classes=classes) for method in METHODS}
        differ = softmax_atol(_logit_atol(case, case.image_logits))
        assert np.abs(random_probabilities - probabilities).max() > differ, scope
        for method, e in random_maps.items():
            scale = np.abs(e.attributions).max()
            assert np.abs(e.attributions - trained[method].attributions).max() > case.atol(scale), (scope, method)
            # the outputs explained are the randomised model's own (its probabilities through a softmax)
            atol = softmax_atol(case.atol(np.abs(e.outputs).max()))
            np.testing.assert_allclose(_softmax(e.outputs), random_probabilities, rtol=0, atol=atol)


def check_randomised_maps_add_up_to_the_randomised_outputs(case: ArmCase) -> None:
    arm, classes = case.arm, _mixed_classes(case)
    for scope in RANDOMISATION_SCOPES:
        with arm.randomized(scope, seed=5):
            for method, spec in METHODS.items():
                if spec.additive:  # maps and base values are the randomised model's own
                    _assert_additive(case, _explain(case, method, classes=classes))


# ------------------------------------------------------------------------------- the list

CHECKS: tuple[Check, ...] = (
    check_predict_proba_gives_float32_probabilities_of_every_class,
    check_probabilities_sum_to_one,
    check_forward_gives_the_logits_and_the_probabilities,
    check_fit_history_has_every_key_and_the_best_epoch,
    check_save_then_load_predicts_identically,
    check_explain_rejects_unknown_methods_outputs_and_wrong_shapes,
    check_deep_shap_is_additive_for_every_image_and_class,
    check_outputs_are_the_models_logits_and_probabilities,
    check_base_values_are_the_mean_background_logits,
    check_explaining_is_deterministic_per_seed,
    check_gradient_shap_gives_finite_maps_with_signal,
    check_explaining_restores_the_global_random_state,
    check_probability_output_explains_the_softmax,
    check_one_class_per_image_equals_the_all_class_maps,
    check_class_tables_with_minus_one_explain_only_the_given_classes,
    check_maps_do_not_depend_on_image_order,
    check_gradient_times_input_is_the_gradient_times_the_offset,
    check_explain_independently_gives_the_librarys_maps_or_none,
    check_explaining_leaves_the_model_untouched,
    check_randomisation_draws_the_same_weights_per_seed_and_others_across_seeds,
    check_randomisation_puts_the_trained_weights_back,
    check_explainers_follow_the_randomised_weights,
    check_randomised_maps_add_up_to_the_randomised_outputs,
)


def checks_for(outputs: Sequence[str]) -> Iterator[Check]:
    """The checks that apply to an arm explaining ``outputs`` (every check but those that
    explain an output the arm does not)."""
    for check in CHECKS:
        if getattr(check, "output", "logits") in outputs:
            yield check
