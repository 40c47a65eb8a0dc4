"""The rules of "Is it the framework?" and of the 2 x 2 design, on maps and predictions whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from common.explanation import Explanation
from experiments.framework import check_verdicts, twin_method

N, K, S = 12, 3, 8


def _explanation(method: str, attributions: np.ndarray) -> Explanation:
    n, k = attributions.shape[:2]
    return Explanation(
        method=method,
        output="logits",
        attributions=attributions.astype(np.float32),
        base_values=np.zeros(k, np.float32),
        outputs=np.zeros((n, k), np.float32),
        probabilities=np.full((n, k), 1 / k, np.float32),
        seconds=0.0,
        n_background=4,
        nsamples=None if method == "deep" else 50,
        classes=np.tile(np.arange(k), (n, 1)),
    )


@pytest.fixture
def maps() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, K, S, S, 3)).astype(np.float32)


def test_the_same_network_in_two_frameworks_agrees_to_rounding_and_passes(maps):
    true = np.arange(N) % K
    twin = maps * (1 + np.random.default_rng(1).normal(scale=1e-7, size=maps.shape))  # float32 rounding
    figures, test = twin_method(_explanation("deep", maps), _explanation("deep", twin), true)
    assert test is None  # a deterministic method: a tolerance, no test
    assert figures.verdict.status == "pass"
    assert figures.max_relative_difference < 1e-5
    assert figures.rho.mean == pytest.approx(1.0) and figures.rho.n == N
    assert figures.n_maps == N * K


def test_maps_that_differ_beyond_rounding_fail(maps):
    true = np.arange(N) % K
    twin = maps + np.random.default_rng(1).normal(scale=0.05, size=maps.shape)  # 5% of a map's scale
    figures, _ = twin_method(_explanation("deep", maps), _explanation("deep", twin), true)
    assert figures.verdict.status == "fail"
    assert 1e-3 < figures.max_relative_difference < 1
    assert figures.rho.mean > 0.9  # still alike: the verdict reads the difference, not the ranking


def test_a_sampled_method_passes_when_it_agrees_as_well_as_two_draws_of_one_framework(maps):
    true = np.arange(N) % K
    rows = np.arange(10)
    twin = maps + np.random.default_rng(1).normal(scale=1e-6, size=maps.shape)
    figures, test = twin_method(
        _explanation("gradient", maps), _explanation("gradient", twin), true, rows, np.full(10, 0.8)
    )
    assert figures.verdict is None and test is not None
    methods = {"gradient": figures}
    check_verdicts(methods, {"gradient": test})
    assert figures.verdict.status == "pass" and figures.ceiling.mean == pytest.approx(0.8)


def test_a_sampled_method_fails_when_the_frameworks_agree_less_than_two_draws(maps):
    true = np.arange(N) % K
    rows = np.arange(10)
    twin = np.random.default_rng(2).normal(size=maps.shape)  # another map altogether: rho about 0
    figures, test = twin_method(
        _explanation("gradient", maps), _explanation("gradient", twin), true, rows, np.full(10, 0.8)
    )
    check_verdicts({"gradient": figures}, {"gradient": test})
    assert figures.verdict.status == "fail"
    assert figures.verdict.p_holm < 0.05


def test_a_sampled_method_on_too_few_ceiling_images_is_not_decided(maps):
    true = np.arange(N) % K
    twin = maps.copy()
    figures, test = twin_method(
        _explanation("gradient", maps), _explanation("gradient", twin), true, np.arange(3), np.full(3, 0.8)
    )
    check_verdicts({"gradient": figures}, {"gradient": test})
    assert figures.verdict.status == "too few images" and figures.verdict.n_needed == 6


def test_twin_maps_of_another_shape_are_refused(maps):
    with pytest.raises(ValueError, match="twin's maps"):
        twin_method(_explanation("deep", maps), _explanation("deep", maps[:, :2]), np.zeros(N, np.int64))


# ------------------------------------------------------------------------------- the twin in the pipeline


def test_the_twin_runs_where_its_source_is_trained_and_the_check_is_on():
    from common.config import load_config, twin_arms

    assert [s.key for s in twin_arms(load_config())] == ["keras_twin"]
    assert [s.key for s in twin_arms(load_config(overrides={"design": "factorial"}))] == ["keras_twin"]
    assert twin_arms(load_config(overrides={"framework_check": False})) == []
    assert twin_arms(load_config(overrides={"only": "keras"})) == []  # its source is not trained
    assert twin_arms(load_config(overrides={"only": "pytorch"})) == []  # one arm only: that arm alone
    # the default config is written as it always was; the switch only when off, and it reads back
    assert "framework_check" not in load_config().to_dict()
    off = load_config(overrides={"framework_check": False})
    assert off.to_dict()["framework_check"] is False and load_config(overrides=off.to_dict()) == off


def test_the_twins_stages_are_keyed_by_its_sources_training():
    from types import SimpleNamespace

    from common.config import load_config
    from common.registry import arm_spec
    from experiments import keys

    selection, twin = SimpleNamespace(key="selection"), arm_spec("keras_twin")
    base = keys.arm_keys(load_config(), "data", selection, twin)
    assert set(base) == {
        "train",
        "predict",
        "explain_deep",
        "explain_gradient",
        "assess_random",
        "assess_deep",
        "assess_gradient",
        "assess_gradinput",
    }  # (its unit runs with the assess stage off)
    retrained = keys.arm_keys(load_config(overrides={"pytorch.epochs": 3}), "data", selection, twin)
    assert retrained["train"] != base["train"] and retrained["explain_deep"] != base["explain_deep"]
    other_arm = keys.arm_keys(load_config(overrides={"keras.epochs": 3}), "data", selection, twin)
    assert other_arm == base


def test_the_twins_unit_runs_after_every_other_once_per_study():
    from common.config import load_config
    from experiments.layout import arm_steps
    from experiments.pipeline import _units

    units = _units(load_config())
    assert [u.arm for u, _, _ in units] == ["pytorch", "keras", "keras_twin"]
    twin_cfg = units[-1][1]
    assert arm_steps(twin_cfg) == ["train", "predict", "explain_deep", "explain_gradient"]  # explained, not assessed
    sweep = _units(load_config(overrides={"seeds": [3, 4]}))
    assert [(u.arm, u.seed) for u, _, _ in sweep] == [
        ("pytorch", 3),
        ("keras", 3),
        ("pytorch", 4),
        ("keras", 4),
        ("keras_twin", 3),
    ]
    assert [u.arm for u, _, _ in _units(load_config(overrides={"framework_check": False}))] == ["pytorch", "keras"]


def test_run_one_after_another_the_twin_runs_in_the_process_of_its_frameworks_arm():
    from common.config import load_config
    from experiments.pipeline import _host_twins, _units
    from experiments.units import Execution

    units = [u for u, _, _ in _units(load_config())]
    first, after = _host_twins(units, Execution())
    assert [(u.arm, u.hosts) for u in first] == [("pytorch", ()), ("keras", ("keras_twin",))] and after == []
    first, after = _host_twins(units[1:], Execution())  # the PyTorch CNN's stages are current: Keras still hosts
    assert [(u.arm, u.hosts) for u in first] == [("keras", ("keras_twin",))] and after == []
    first, after = _host_twins([units[0], units[2]], Execution())  # Keras's are current: the twin runs alone, after
    assert [(u.arm, u.hosts) for u in first] == [("pytorch", ())] and [u.arm for u in after] == ["keras_twin"]
    # on Dask the units run at once: the twin waits for its source's, in a process of its own
    first, after = _host_twins(units, Execution(jobs=2))
    assert all(u.hosts == () for u in first) and [u.arm for u in after] == ["keras_twin"]
