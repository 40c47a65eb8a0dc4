"""The verdict rules (common/verdicts.py) on cases whose answer is known.

- an "explainer" that returns |x - background| or an edge map, whatever the model, fails the
  randomisation and random-logit checks;
- gradient x input on two unrelated random models is not declared a failure, although its
  |map| correlates well above zero (it inherits |x - background|, as the null shows);
- a method whose map depends on the weights passes;
- too few images give no verdict; a null that reaches the threshold makes the check uninformative;
  Holm's correction counts the whole family.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from common.config import AssessConfig, StudyConfig
from common.explanation import ExplainerOutput
from common.quality.randomisation import input_only_similarity
from common.stats import holm, images_needed
from common.verdicts import SANITY_THRESHOLD, Pending, decide
from experiments import assess
from experiments.budget import AssessPlan
from experiments.evaluate_quality import summarise_arm
from tests.fake_arm.arm import FakeArm

SIZE, N = 16, 12
SETTINGS = AssessConfig(steps=8, spacing="linear", random_orders=1, n_sanity=N)


class InputOnlyArm(FakeArm):
    """A fake arm whose "explainer" ignores the model: every class's map is the same function of the image."""

    kind = "offset"

    def _explain(self, images, background, method, *, nsamples, seeds, output, classes) -> ExplainerOutput:
        x = images.astype(np.float64)
        if self.kind == "offset":  # |x - mean background|
            m = np.abs(x - background.astype(np.float64).mean(axis=0))
        else:  # an edge map of the image
            m = np.hypot(ndimage.sobel(x, axis=1), ndimage.sobel(x, axis=2))
        k = 1 if classes is not None else self.n_classes
        out = super()._explain(
            images, background, method, nsamples=nsamples, seeds=seeds, output=output, classes=classes
        )
        out.attributions = np.repeat(m[:, None], k, axis=1)
        return out


def _images(tiny_images):
    x, _ = tiny_images(6, SIZE, seed=0)
    return x[:N], x[N : N + 4]


def _verdicts(arm, images, background, method: str) -> dict:
    """The arm's verdicts for ``method`` from the assess stage's measures, as the evaluate stage gives them."""
    classes = arm.predict_proba(images).argmax(1)
    plan = AssessPlan(N, N, 1, SETTINGS.steps, 0.0, 0.0, 0.0)
    inputs = assess.make_inputs(images, background, classes, classes, arm.n_classes, SETTINGS, plan, seed=0)
    randomised = {scope: (lambda s=scope: arm.randomized(s, seed=5)) for scope in ("head", "all")}
    measures = assess.assess_method(
        arm, method, None, inputs, SETTINGS, nsamples=8, seed=0, output="logits", randomised=randomised
    )
    random = assess.assess_random(arm, inputs, seed=0)
    null = input_only_similarity(images, background, seed=0)
    return summarise_arm(random, {method: measures}, arm.n_classes, null).methods[method]


def _random_linear(seed: int, cls=FakeArm) -> FakeArm:
    """An untrained linear model: weights drawn at random."""
    weights = np.random.default_rng(seed).normal(0, 0.05, (3, SIZE * SIZE * 3))
    return cls(weights, np.zeros(3), SIZE, StudyConfig())


@pytest.mark.parametrize("kind", ["offset", "edges"])
def test_an_explainer_that_ignores_the_model_fails_the_sanity_checks(tiny_images, kind):
    images, background = _images(tiny_images)
    arm = _random_linear(0, InputOnlyArm)
    arm.kind = kind
    mq = _verdicts(arm, images, background, "deep")
    for check in ("randomisation_head", "randomisation_all", "random_logit"):
        v = mq.verdicts[check]
        assert v.status == "fail", (check, v)
        assert v.effect.mean == pytest.approx(1.0) and v.n == N and v.p_holm < 0.05
    assert mq.null.signed_rho.ci95[1] < SANITY_THRESHOLD  # the null, unlike this explainer, does not keep the ranking


def test_gradient_times_input_of_two_unrelated_random_models_is_not_a_failure(tiny_images):
    images, background = _images(tiny_images)
    arm = _random_linear(1)  # an untrained model; randomised, another unrelated one
    mq = _verdicts(arm, images, background, "gradinput")
    for scope in ("head", "all"):
        r = mq.randomisation[scope]
        assert r.verdict.status != "fail", r.verdict
        assert r.signed_rho.mean < SANITY_THRESHOLD
        # |map| inherits |x - background| whatever the model: well above zero, and about the null's
        assert r.abs_rho.mean > 0.2 and abs(r.abs_rho.mean - mq.null.abs_rho.mean) < 0.3
    assert mq.verdicts["randomisation_all"].status == "pass"


@pytest.mark.pytorch
def test_gradient_times_input_of_two_unrelated_random_cnns_is_not_a_failure(tiny_images):
    pytest.importorskip("torch")
    from common.config import load_config
    from pytorch_impl.cnn_arm import PyTorchArm

    images, background = _images(tiny_images)
    arm = PyTorchArm.create(load_config(overrides={"pytorch.device": "cpu"}), n_classes=3, image_size=SIZE)
    mq = _verdicts(arm, images, background, "gradinput")
    assert mq.verdicts["randomisation_all"].status != "fail"
    assert mq.randomisation["all"].signed_rho.mean < SANITY_THRESHOLD


def test_a_method_whose_map_depends_on_the_weights_passes(tiny_images):
    images, background = _images(tiny_images)
    mq = _verdicts(_random_linear(2), images, background, "deep")  # W * (x - mean background)
    assert mq.verdicts["randomisation_head"].status == "pass"
    assert mq.verdicts["randomisation_all"].status == "pass"


def test_rules_on_statistics_whose_answer_is_known():
    high, low = np.full(12, 0.95), np.full(12, 0.02)
    tests = {
        "kept": Pending("sanity", high, SANITY_THRESHOLD, "below"),
        "changed": Pending("sanity", low, SANITY_THRESHOLD, "below"),
        "noisy": Pending("sanity", np.linspace(0.2, 0.8, 12), SANITY_THRESHOLD, "below"),
        "null too high": Pending("sanity", high, SANITY_THRESHOLD, "below", True, null_upper=0.6),
        "same library": Pending("cross_library", np.zeros(12), 0.0, "above", False),
        "worse library": Pending("cross_library", np.full(12, -0.3), 0.0, "above", False),
    }
    verdicts, corrected, needed = decide(tests)
    assert needed == images_needed(5)  # the uninformative test still counts; the constant zero has no test
    assert {k: v.status for k, v in verdicts.items()} == {
        "kept": "fail",
        "changed": "pass",
        "noisy": "not significant",
        "null too high": "uninformative",
        "same library": "pass",
        "worse library": "fail",
    }
    assert corrected["kept"] > verdicts["kept"].p  # Holm: corrected for the family


def test_too_few_images_give_no_verdict_whatever_the_data():
    verdicts, _, needed = decide({"kept": Pending("sanity", np.full(3, 1.0), SANITY_THRESHOLD, "below")})
    assert needed > 3 and verdicts["kept"].status == "too few images" and verdicts["kept"].n_needed == needed


def test_holm_and_images_needed():
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None}) == {"a": 0.03, "b": 0.06, "c": 0.06, "d": None}
    # the smallest two-sided exact Wilcoxon p on n images is 2 / 2**n, multiplied by the family's size
    assert images_needed(1) == 6 and images_needed(12) == 9 and images_needed(24) == 10
