"""The registries: every arm and method defined once, and a third arm joining the study
through one registry entry (``tests/fake_arm``, NumPy only) and nothing else."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import registry
from common.config import load_config
from common.errors import ConfigError
from common.explanation import Explanation
from experiments.run_all import main, parse_args
from tests.fake_arm import SPEC as FAKE


@pytest.fixture
def fake_arm(monkeypatch):
    """The fake arm registered for one test (and gone after it)."""
    monkeypatch.setitem(registry.ARMS, FAKE.key, FAKE)
    return FAKE


def test_every_registered_arm_class_carries_its_own_entry():
    for spec in registry.ARMS.values():
        cls = spec.load_arm_class()
        assert cls.spec is spec
        if spec.weights_of is None:  # a twin is not trained
            assert dataclass_fields(spec.settings_class()) >= {"epochs"}
        else:
            assert spec.weights_of in registry.ARMS and spec not in registry.trained_arms()


def dataclass_fields(cls) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


def test_a_registered_arm_gets_a_config_section_and_a_cli_choice(fake_arm, monkeypatch):
    cfg = load_config(overrides={"only": "fake", "fake.epochs": 7})
    assert cfg.fake.epochs == 7 and cfg.arm("fake").lr == 0.5
    assert list(cfg.to_dict())[:6] == ["seed", "out", "only", "data", "pytorch", "keras"]
    assert cfg.to_dict()["fake"] == {"epochs": 7, "lr": 0.5}
    assert parse_args(["--only", "fake"]).only == "fake"
    monkeypatch.delitem(registry.ARMS, "fake")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(overrides={"fake.epochs": 7})
    with pytest.raises(SystemExit):
        parse_args(["--only", "fake"])


def test_names_are_unique_and_specs_travel_as_json(fake_arm, monkeypatch):
    assert registry.ArmSpec.from_json(json.loads(json.dumps(FAKE.to_json()))) == FAKE
    registry.register_arm(FAKE)  # the same entry again (as the arm worker does): no-op
    monkeypatch.delitem(registry.ARMS, "fake")
    registry.register_arm(FAKE)  # a new entry
    clash = registry.ArmSpec(**{**FAKE.to_json(), "key": "other", "versions": ()})
    with pytest.raises(ValueError, match="already registered"):
        registry.register_arm(clash)  # same name, other key
    with pytest.raises(ValueError, match="design must be one of published, factorial"):
        registry.register_arm(registry.ArmSpec(**{**FAKE.to_json(), "key": "k", "name": "n", "design": "full"}))
    assert registry.arm_by_name("fake_linear") is FAKE
    assert registry.split_map_label("fake_gradient") == ("fake", "gradient")
    assert registry.map_title("fake", "deep") == "NumPy Deep SHAP"


def test_pass_counts_follow_shap():
    deep, gradient = registry.METHODS["deep"], registry.METHODS["gradient"]
    # Deep SHAP: per image and output one pass over the image tiled against B background rows + the B rows
    assert deep.passes(n_images=3, n_outputs=10, n_background=16, nsamples=64) == 3 * 10 * 32
    # Gradient SHAP: nsamples interpolated rows per image and output, whatever the background
    assert gradient.passes(n_images=3, n_outputs=10, n_background=16, nsamples=64) == 3 * 10 * 64
    with pytest.raises(ValueError, match="method must be one of deep, gradient"):
        registry.method_spec("lime")


def test_a_third_arm_runs_through_every_stage(fake_arm, split_folders, tmp_path, caplog):
    """The fake arm is a package plus one registry entry: the runner starts its worker,
    trains, predicts, explains, evaluates and reports it like any other arm."""
    data = split_folders(tmp_path / "ds")
    out = tmp_path / "out"
    args = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--only",
        "fake",
        "--image-size",
        "32",
        "--n-explain",
        "3",
        "--n-background",
        "4",
        "--nsamples",
        "8",
    ]
    caplog.set_level("INFO", logger="study")
    assert main(args) == 0
    assert "starting the Fake linear model arm in its own process" in caplog.text
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["models"]) == ["fake_linear"] and "comparison" not in m
    model = m["models"]["fake_linear"]
    assert 0 <= model["test_accuracy_ci95"][0] <= model["test_accuracy"] <= model["test_accuracy_ci95"][1] <= 1
    assert len(model["history"]["val_loss"]) == 3 and model["info"]["device"] == "cpu (NumPy)"
    deep = m["attributions"]["fake_linear"]["deep"]
    assert deep["n_images"] == 3 and deep["additivity_max_abs_error"] < 1e-5
    # predicted+true (the default): the predicted class, and a second map where it is wrong
    saved = Explanation.load(out / "fake_linear" / "attributions_deep.npz")
    assert np.array_equal(saved.classes[:, 0], saved.probabilities.argmax(1))
    assert np.all((saved.classes[:, 1] == -1) | (saved.classes[:, 1] != saved.classes[:, 0]))
    assert deep["n_classes_explained"] == 2 and deep["n_maps"] == saved.n_maps == 3 + (saved.classes[:, 1] >= 0).sum()
    assert m["attributions"]["fake_linear"]["gradient"]["nsamples"] == 8
    assert m["agreement"]["pairs"].keys() == {"fake_deep~fake_gradient"}
    assert m["versions"]["numpy"] == np.__version__
    stages = [s["stage"] for s in m["stages"]]
    assert stages == [
        "data",
        "train fake",
        "predict fake",
        "explain_deep fake",
        "explain_gradient fake",
        "assess_random fake",
        "assess_deep fake",
        "assess_gradient fake",
        "assess_gradinput fake",
        "evaluate",
        "report",
    ]
    quality = m["quality"]["arms"]["fake_linear"]
    assert set(quality["methods"]) == {"deep", "gradient", "gradinput"}
    assert quality["methods"]["deep"]["cross_library"] is None or "cross_library" not in quality["methods"]["deep"]
    report = (out / "report.md").read_text()
    assert "Fake linear model only" in report and "NumPy Deep SHAP vs NumPy Gradient SHAP" in report
    assert (out / "figures" / "shap_fake_deep.png").is_file()

    # A rerun finds every stage current: no worker starts and the report is not rewritten.
    before = (out / "metrics.json").read_bytes()
    caplog.clear()
    assert main(args) == 0
    assert "starting the" not in caplog.text and "report                   cached" in caplog.text
    assert (out / "metrics.json").read_bytes() == before

    # Changing only an assessment setting retrains and re-explains nothing.
    caplog.clear()
    assert main([*args, "--assess-steps", "5"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    status = {r["stage"]: r["status"] for r in m["stages"]}
    assert {s for s, st in status.items() if st == "ran"} == {
        "data",
        "assess_random fake",
        "assess_deep fake",
        "assess_gradient fake",
        "assess_gradinput fake",
        "evaluate",
        "report",
    }
    assert len(m["quality"]["arms"]["fake_linear"]["fractions"]) == 6

    # Switched off: no assess stage and no quality section.
    assert main([*args, "--no-assess"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "quality" not in m and not any(s["stage"].startswith("assess") for s in m["stages"])
