"""Agreement between maps, the shap.image_plot layout and an explanation's additivity errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import spearmanr

from common.explanation import Explanation, channel_sum, class_table
from common.quality.agreement import agreement
from common.report.shap_plot import to_image_plot_lists


def _maps(n=3, k=2, h=4, w=5, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, k, h, w, c)).astype(np.float32)


def test_channel_sum():
    a = np.arange(2 * 3 * 2, dtype=np.float32).reshape(1, 2, 3, 2)
    np.testing.assert_array_equal(channel_sum(a), a[..., 0] + a[..., 1])


def test_identical_maps_rho_one_and_negated_minus_one():
    m = _maps()
    cls = np.array([0, 1, 0])
    r = agreement(
        {"pytorch_deep": m, "keras_deep": m, "keras_gradient": -m},
        {k: cls for k in ("pytorch_deep", "keras_deep", "keras_gradient")},
    )
    assert list(r["pairs"]) == ["pytorch_deep~keras_deep", "pytorch_deep~keras_gradient", "keras_deep~keras_gradient"]
    assert r["pairs"]["pytorch_deep~keras_deep"] == pytest.approx(1.0)
    assert r["pairs"]["pytorch_deep~keras_gradient"] == pytest.approx(-1.0)
    assert len(r["per_image"]) == 3 and r["per_image"][1]["keras_deep~keras_gradient"] == pytest.approx(-1.0)
    assert r["n_images"]["pytorch_deep~keras_deep"] == 3
    assert "Spearman" in r["method"]


def test_each_map_taken_at_its_own_class():
    m = _maps(n=2, k=3)
    other = np.zeros_like(m)
    # keras' class-2 map equals pytorch's class-0 map; keras' class 0 is noise
    other[:, 2] = m[:, 0]
    other[:, 0] = _maps(n=2, k=3, seed=5)[:, 0]
    same = agreement(
        {"pytorch_deep": m, "keras_deep": other}, {"pytorch_deep": np.array([0, 0]), "keras_deep": np.array([2, 2])}
    )
    assert same["pairs"]["pytorch_deep~keras_deep"] == pytest.approx(1.0)
    wrong = agreement(
        {"pytorch_deep": m, "keras_deep": other}, {"pytorch_deep": np.array([0, 0]), "keras_deep": np.array([0, 0])}
    )
    assert wrong["pairs"]["pytorch_deep~keras_deep"] < 0.9


def test_constant_map_is_nan_and_ignored_in_mean():
    m = _maps(n=3, k=1)
    flat = m.copy()
    flat[1] = 0.0  # image 2's map is constant: no ranking
    cls = np.zeros(3, dtype=int)
    r = agreement({"pytorch_deep": m, "pytorch_gradient": flat}, {"pytorch_deep": cls, "pytorch_gradient": cls})
    pair = "pytorch_deep~pytorch_gradient"
    assert r["per_image"][1][pair] is None
    assert r["pairs"][pair] == pytest.approx(1.0)  # mean of the two defined images
    assert r["n_images"][pair] == 2
    all_flat = agreement({"pytorch_deep": m, "keras_deep": np.zeros_like(m)}, {"pytorch_deep": cls, "keras_deep": cls})
    assert all_flat["pairs"]["pytorch_deep~keras_deep"] is None


def test_fewer_than_two_maps_gives_no_pairs():
    r = agreement({"pytorch_deep": _maps()}, {"pytorch_deep": np.zeros(3, dtype=int)})
    assert r["pairs"] == {} and r["per_image"] == []


def test_mismatched_images_rejected():
    with pytest.raises(ValueError):
        agreement(
            {"pytorch_deep": _maps(n=3), "keras_deep": _maps(n=2)},
            {"pytorch_deep": np.zeros(3, int), "keras_deep": np.zeros(2, int)},
        )


def test_to_image_plot_lists_pinned():
    # attributions[n, k, h, w, c] = 1000*n + 100*k + 10*h + w + c/10 (every value says where it belongs)
    n, k, h, w, c = 2, 3, 2, 4, 3
    a = np.fromfunction(lambda i, j, y, x, ch: 1000 * i + 100 * j + 10 * y + x + ch / 10, (n, k, h, w, c))
    lists = to_image_plot_lists(a)
    assert isinstance(lists, list) and len(lists) == 3
    assert all(arr.shape == (2, 2, 4, 3) for arr in lists)
    assert lists[2][1, 1, 3, 2] == pytest.approx(1000 + 200 + 10 + 3 + 0.2)
    assert lists[0][0, 0, 0, 0] == 0.0
    assert lists[1][0, 1, 2, 1] == pytest.approx(100 + 10 + 2 + 0.1)
    with pytest.raises(ValueError):
        to_image_plot_lists(a[0])


def test_explanation_additivity_errors():
    attr = np.zeros((2, 2, 1, 1, 1), dtype=np.float32)
    attr[:, :, 0, 0, 0] = [[1.0, 2.0], [3.0, 4.0]]
    ex = Explanation(
        method="deep",
        output="logits",
        attributions=attr,
        base_values=np.array([0.5, 0.0], dtype=np.float32),
        outputs=np.array([[1.5, 2.0], [3.5, 4.25]], dtype=np.float32),
        probabilities=np.full((2, 2), 0.5, dtype=np.float32),
        seconds=1.0,
        n_background=4,
    )
    # |sum of attributions - (output - base value)| per map (image and class), in image order
    np.testing.assert_allclose(ex.additivity_errors, [0.0, 0.0, 0.0, 0.25], atol=1e-7)
    assert ex.additivity_max_abs_error == pytest.approx(0.25)
    # a class table with "none" (-1) in the second column: only the computed maps count
    attr[0, 1] = 99.0  # not a map: image 0 has no second class
    one = dataclasses.replace(ex, attributions=attr, classes=np.array([[0, -1], [1, 0]]))
    assert one.n_maps == 3
    # image 0 class 0: 1 - (1.5 - 0.5); image 1 class 1: 3 - (4.25 - 0); image 1 class 0: 4 - (3.5 - 0.5)
    np.testing.assert_allclose(one.additivity_errors, [0.0, 1.25, 1.0], atol=1e-7)


def test_class_table_for_each_selection():
    predicted, true = np.array([0, 2, 1]), np.array([0, 1, 1])
    assert class_table("all", predicted, true) is None
    np.testing.assert_array_equal(class_table("predicted", predicted, true), [[0], [2], [1]])
    np.testing.assert_array_equal(class_table("predicted+true", predicted, true), [[0, -1], [2, 1], [1, -1]])
    with pytest.raises(ValueError):
        class_table("most probable", predicted, true)


def test_pixels_zero_in_both_maps_are_left_out_of_the_agreement():
    rng = np.random.default_rng(0)
    a = np.zeros((1, 1, 8, 8, 1))
    b = np.zeros((1, 1, 8, 8, 1))
    a[0, 0, 2:6, 2:6, 0] = rng.uniform(0.1, 1, size=(4, 4))  # the maps live in the centre; a zero border pads them
    b[0, 0, 2:6, 2:6, 0] = rng.uniform(0.1, 1, size=(4, 4))
    result = agreement({"x_deep": a, "y_deep": b}, {"x_deep": [0], "y_deep": [0]})
    centre = spearmanr(a[0, 0, 2:6, 2:6].ravel(), b[0, 0, 2:6, 2:6].ravel()).statistic
    whole = spearmanr(a.ravel(), b.ravel()).statistic
    assert result["pairs"]["x_deep~y_deep"] == pytest.approx(centre)
    assert abs(whole - centre) > 0.05  # the tied zeros would have moved it
    assert "zero in both maps" in result["method"]


def test_additivity_in_float64_with_mean_and_relative_error():
    e = Explanation(
        method="deep",
        output="logits",
        attributions=np.full((2, 1, 2, 2, 1), 0.25, np.float32),  # each map sums to 1
        base_values=np.array([0.0], np.float32),
        outputs=np.array([[1.0], [3.0]], np.float32),  # deltas 1 and 3: errors 0 and 2
        probabilities=np.ones((2, 1), np.float32),
        seconds=0.0,
        n_background=1,
    )
    np.testing.assert_allclose(e.additivity_errors, [0.0, 2.0])
    assert e.additivity_max_abs_error == 2.0 and e.additivity_mean_abs_error == 1.0
    assert e.additivity_relative_error == pytest.approx(1.0 / 2.0)  # mean error / mean |delta|
    one = Explanation(**{**e.__dict__, "classes": np.array([0, 0])})
    np.testing.assert_allclose(one.additivity_errors, e.additivity_errors)
