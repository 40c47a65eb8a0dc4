"""The study from Python (``from experiments import run_study, open_study``), as a notebook uses it:
the report's tables as DataFrames, the images and maps as arrays, every figure redrawn with
options by the report's own code, and one clear error for what a folder cannot give.

Most tests read the session's small study (``tests/small_study.py``: two fake arms, seeds 0
and 1, every section of the report), made once through ``run_study``.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from common.errors import ChoiceError, ConfigError, NotAStudyError, StudyError, UnavailableError
from common.explanation import Explanation, channel_sum
from experiments import open_study, run_study

REPO = Path(__file__).resolve().parents[1]


def test_a_study_opens_with_every_table_of_its_report(small_study, two_fakes):
    study = open_study(small_study.out)
    metrics = json.loads((small_study.out / "metrics.json").read_text())
    assert study.finished and study.arms == ["fake", "fake2"] and study.methods == ["deep", "gradient"]
    assert study.training_seeds == [0, 1] and study.schema_note is None
    assert study.class_names == ["ants", "bees", "wasps"]
    assert study.config.seeds == (0, 1) and study.config.explain.n_explain == 6
    acc = study.accuracy
    assert list(acc.arm) == ["fake", "fake2"] and list(acc.model) == ["Fake linear model", "Second fake model"]
    assert acc.test_accuracy.tolist() == [m["test_accuracy"] for m in metrics["models"].values()]
    assert (acc.ci95_low <= acc.test_accuracy).all() and (acc.test_accuracy <= acc.ci95_high).all()
    assert len(study.per_class) == 2 * 3 and set(study.per_class.columns) >= {"class", "precision", "recall", "f1"}
    assert len(study.agreement) == len(metrics["agreement"]["pairs"]) == 6  # 4 maps, every pair
    assert study.agreement.pair.iloc[0] == "NumPy Deep SHAP vs NumPy Gradient SHAP"
    assert len(study.explainers) == 4 and set(study.explainers.method) == {"deep", "gradient"}
    quality = study.quality  # each model: its random order, two methods and the gradient x input baseline
    assert list(quality.method) == ["random", "deep", "gradient", "gradinput"] * 2
    assert quality.set_index(["arm", "method"]).loc[("fake", "deep"), "deletion_auc"] == pytest.approx(
        metrics["quality"]["arms"]["fake_linear"]["methods"]["deep"]["deletion_auc"]["mean"]
    )
    assert {"deletion", "insertion", "random_logit"} <= set(study.verdicts.check)
    assert study.verdicts.status.isin(["pass", "fail", "not significant", "too few images", "uninformative"]).all()
    assert list(study.seeds.seed) == [0, 0, 1, 1] and len(study.stability) == 4
    assert study.table("accuracy").equals(acc) and study.unavailable == []
    with pytest.raises(ChoiceError, match="the tables: accuracy, per_class"):
        study.table("accuracies")
    assert "Fake linear model" in repr(study) and "finished" in repr(study)


def test_images_and_maps_are_arrays_of_the_explained_images(small_study, two_fakes):
    study = open_study(small_study.out)
    images, labels = study.images, study.labels
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8 and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    saved = Explanation.load(small_study.out / "fake_linear" / "seed-0" / "attributions_deep.npz")
    assert study.explanation("fake", "deep").attributions.shape == saved.attributions.shape
    predicted = saved.probabilities.argmax(1)
    np.testing.assert_array_equal(study.maps("fake_linear", "deep"), channel_sum(saved.maps_for(predicted)))
    assert study.maps("fake", "deep", channels=True).shape == (6, 32, 32, 3)
    seed_1 = study.maps("fake", "gradient", seed=1)
    assert seed_1.shape == (6, 32, 32) and not np.array_equal(seed_1, study.maps("fake", "gradient"))
    with pytest.raises(ChoiceError, match=r"seed 7 is not one of this study's training seeds \[0, 1\]"):
        study.maps("fake", "deep", seed=7)
    with pytest.raises(ChoiceError, match=r"arm 'torch' is not in this study; its arms: fake \(Fake linear model\)"):
        study.maps("torch", "deep")
    with pytest.raises(ChoiceError, match="method 'lime' is not in this study"):
        study.maps("fake", "lime")
    right = np.flatnonzero(predicted == labels)
    if right.size:  # predicted+true: no second map where the prediction is right, so "true" is the first
        np.testing.assert_array_equal(study.maps("fake", "deep", at="true")[right], study.maps("fake", "deep")[right])


def test_every_figure_of_the_report_redraws_with_options(small_study, two_fakes):
    study = open_study(small_study.out)
    assert study.figure_names == [
        "training_curves",
        "confusion_matrices",
        "attribution_grid",
        "shap_fake_deep",
        "shap_fake_gradient",
        "shap_fake2_deep",
        "shap_fake2_gradient",
        "quality_curves",
    ]
    for name in study.figure_names:
        assert isinstance(study.figure(name), Figure), name
    grid = study.figure("attribution_grid", images=[0, 2], arms="fake", methods=["deep"])
    titles = [ax.get_title() for ax in grid.axes if ax.get_title()]
    assert titles[0].startswith("image 0") and any(t.startswith("image 2") for t in titles)
    assert len([t for t in titles if t.startswith("NumPy Deep SHAP")]) == 2  # one column, two rows
    bees = study.figure("attribution_grid", classes=["bees"])
    assert len([ax for ax in bees.axes if ax.get_title().startswith("image")]) == 2
    assert len(study.figure("confusion_matrices", classes=["ants", 2], arms="fake2").axes) == 1
    assert len(study.figure("quality_curves", arms="fake", methods="deep").axes) == 2
    assert len(study.figure("training_curves", arms=["fake2"]).axes) == 2
    assert study.figure("shap_image", arm="fake2", method="gradient", images=[1, 3], seed=1)
    for name, options, message in [
        ("grid", {}, "no figure 'grid'; the figures: training_curves"),
        ("attribution_grid", {"imgs": [1]}, "has no option 'imgs'; its options: images, classes, arms, methods"),
        ("attribution_grid", {"images": [6]}, r"image 6 is not one of the 6 explained images \(positions 0 to 5\)"),
        ("confusion_matrices", {"classes": ["wolves"]}, "class 'wolves' is not one of this study's 3 classes"),
        ("quality_curves", {"methods": "lime"}, "method 'lime' is not in this study"),
    ]:
        with pytest.raises(ChoiceError, match=message):
            study.figure(name, **options)


def test_the_report_stage_draws_through_the_same_functions(small_study, two_fakes, tmp_path):
    from common.report.plots import save_figure

    study = open_study(small_study.out)
    for name in ("attribution_grid", "quality_curves", "confusion_matrices"):
        redrawn = save_figure(study.figure(name), tmp_path / f"{name}.png")
        with Image.open(redrawn) as a, Image.open(small_study.out / "figures" / f"{name}.png") as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), name  # the same pixels as the report's PNG


def test_open_study_refuses_what_is_not_a_study(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    for folder, why in [
        ("nowhere", "it does not exist"),
        ("a_file", "it is a file"),
        ("empty", "it holds neither metrics.json nor config.yaml with data/dataset.json"),
    ]:
        with pytest.raises(NotAStudyError, match=f"is not a study's output folder: {why}") as caught:
            open_study(tmp_path / folder)
        assert "\n" not in str(caught.value)
    with pytest.raises(NotAStudyError, match="metrics.json cannot be read"):
        open_study(tmp_path / "bad")


def test_a_folder_without_arrays_and_of_an_older_schema_says_what_it_lacks(small_study, two_fakes, tmp_path):
    """As the committed example was: metrics.json of schema version 2, without maps or models."""
    out = tmp_path / "copy"
    for rel in ("metrics.json", "config.yaml", "split.csv", "data/dataset.json"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_study.out / rel, out / rel)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["schema_version"] = 2
    for arm in metrics["quality"]["arms"].values():  # version 2 had no verdicts
        for method in arm["methods"].values():
            del method["verdicts"]
    (out / "metrics.json").write_text(json.dumps(metrics))
    study = open_study(out)
    assert study.schema_version == 2 and "schema version 2" in study.schema_note
    assert len(study.accuracy) == 2 and study.verdicts.empty and "deletion_verdict" not in study.quality
    assert isinstance(study.figure("quality_curves"), Figure) and study.images.shape == (6, 32, 32, 3)
    for ask in (lambda: study.maps("fake", "deep"), lambda: study.figure("attribution_grid", images=[0, 1])):
        with pytest.raises(UnavailableError, match=r"Deep SHAP are not in this folder: fake_linear/seed-0/attr"):
            ask()
    assert len(study.unavailable) == 4 and all("is missing" in line for line in study.unavailable)


def test_the_committed_example_opens_and_redraws_its_grid(tmp_path):
    """The README's first lines of Python, on reports/example-digits (the real arms)."""
    study = open_study(REPO / "reports" / "example-digits")
    assert list(study.accuracy.arm) == ["pytorch", "keras"]
    # "Is it the framework?": the PyTorch CNN and its Keras twin agree; the two models' maps do not
    check = study.framework_check.set_index("method")
    assert (check.status == "pass").all() and (check.max_relative_difference < 1e-3).all()
    assert (check.test_accuracy == check.twin_test_accuracy).all() and (check.models_rho < 0.5).all()
    study.figure("attribution_grid", images=[0, 1, 2]).savefig(tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as png:
        assert png.size[0] > png.size[1] > 100


def test_run_study_checks_its_settings_as_the_command_line_its_flags(tmp_path, split_folders):
    data = split_folders(tmp_path / "ds", n_train=5, n_test=2)
    out = tmp_path / "out"
    for settings, message in [
        ({"nexplain": 3}, "run_study\\(\\) has no setting 'nexplain'; its settings: seed, seeds, split_seed"),
        ({"n_explain": "3"}, "n_explain must be an integer, got '3'"),
        ({"seeds": 5}, "seeds must be a list, got 5"),
        ({"only": "tensorflow"}, "only must be one of pytorch, keras"),
        ({"deterministic": 1}, "deterministic must be True or False"),
        ({"image_size": 8}, "data.image_size must be between 32 and 512"),  # the config's own check
    ]:
        with pytest.raises(ConfigError, match=message):
            run_study(data, out=out, **settings)
    assert not out.exists()


def test_a_partly_finished_study_opens_with_its_data_stage(tmp_path, split_folders, capsys):
    data = split_folders(tmp_path / "ds", n_train=5, n_test=2)
    study = run_study(data, out=tmp_path / "out", image_size=32, dry_run=True, quiet=True)
    assert "split written to" in capsys.readouterr().out
    assert not study.finished and study.class_names == ["ants", "bees", "wasps"] and study.dataset.name == "ds"
    with pytest.raises(UnavailableError, match="holds no results yet: the study stopped before its evaluate stage"):
        study.accuracy  # noqa: B018
    with pytest.raises(UnavailableError, match="the explained images are not chosen yet"):
        study.images  # noqa: B018


def test_import_is_cheap_and_the_api_is_documented():
    heavy = "('numpy', 'pandas', 'experiments.api')"
    code = f"import experiments, sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert loaded.stdout.strip() == "[]"
    from common.report import figures, tables
    from experiments import api, study

    for module in (api, study, figures, tables):
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
    for name, member in vars(study.Study).items():
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
            assert inspect.getdoc(member), f"Study.{name} has no docstring"
    for fn in (api.run_study, api.open_study, study.Study.maps, study.Study.figure, study.Study.explanation):
        doc = inspect.getdoc(fn)
        assert "Parameters\n----------" in doc and "Returns\n-------" in doc, fn.__qualname__


def test_the_console_script_runs_the_command_line():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["shap-study"].partition(":")
    from experiments import run_all

    assert module == "experiments.run_all" and getattr(run_all, function) is run_all.main
    with pytest.raises(SystemExit) as done:
        run_all.main(["--help"])
    assert done.value.code == 0


def test_errors_of_the_api_are_study_errors():
    assert all(issubclass(e, StudyError) for e in (ChoiceError, NotAStudyError, UnavailableError, ConfigError))
    assert issubclass(ChoiceError, ValueError)
