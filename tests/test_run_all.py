"""The command line: dry run, bad input, and (marked slow) the whole study end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common.config import load_config
from common.io import read_json
from experiments.run_all import main

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_writes_split_and_prints_counts(tmp_path, capsys, split_folders):
    data = split_folders(tmp_path / "ds", junk=True)
    out = tmp_path / "out"
    rc = main(["--data", str(data), "--out", str(out), "--dry-run", "--image-size", "32"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ants" in printed and "skipped files: 1" in printed and ".DS_Store: not an image" in printed
    lines = (out / "split.csv").read_text().splitlines()
    assert lines[0] == "path,label,split,sha256" and len(lines) == 1 + 42
    # beside it, the files not used and why (as printed), and the same in the data summary
    assert (out / "skipped.csv").read_text().splitlines() == ["path,reason", ".DS_Store,not an image"]
    assert read_json(out / "data" / "dataset.json")["skipped"] == [{"path": ".DS_Store", "reason": "not an image"}]
    assert not (out / "metrics.json").exists()  # no training in a dry run


def test_skipped_csv_is_the_header_alone_when_every_file_is_used(tmp_path, split_folders):
    data = split_folders(tmp_path / "ds")
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out), "--dry-run", "--image-size", "32"]) == 0
    assert (out / "skipped.csv").read_text().splitlines() == ["path,reason"]
    assert read_json(out / "data" / "dataset.json")["skipped"] == []


@pytest.mark.parametrize(
    ("selection", "deep_maps", "gradient_passes"), [("predicted", "6", "384"), ("all", "18", "1,152")]
)
def test_dry_run_prints_the_planned_explainer_passes(
    tmp_path, capsys, split_folders, selection, deep_maps, gradient_passes
):
    data = split_folders(tmp_path / "ds")
    flags = ["--n-explain", "6", "--n-background", "4", "--nsamples", "64", "--classes", selection, "--no-assess"]
    assert main(["--data", str(data), "--out", str(tmp_path / "o"), "--dry-run", "--image-size", "32", *flags]) == 0
    rows = {tuple(line.split()[:4]): line.split() for line in capsys.readouterr().out.splitlines()}
    # 6 images x 3 classes (all) or x 1; Deep SHAP 2 x 4 background rows per map, Gradient SHAP 64
    deep = rows[("PyTorch", "CNN", "explain_deep", "6")]
    assert deep[4] == deep_maps and deep[5] == f"{int(deep_maps.replace(',', '')) * 8:,}"
    assert rows[("Keras", "ResNet50", "explain_gradient", "6")][5] == gradient_passes


def test_planned_work_of_the_assessment():
    from experiments.plan import planned_work

    cfg = load_config(overrides={"explain.classes": "predicted+true", "assess.n_sanity": 2, "assess.steps": 4})
    plan = {(r.arm, r.stage): r for r in planned_work(cfg, n_explain=6, n_classes=3, n_background=4)}
    explain = plan[("PyTorch CNN", "explain_gradient")]
    assert explain.maps == (6, 12) and explain.passes == (6 * 64, 12 * 64)
    # Gradient SHAP: the random logit, the second draw (noise floor, ceiling) and two randomised models and
    # Captum's maps (the PyTorch arm's cross-check), on 2 images
    assert plan[("PyTorch CNN", "assess_gradient")].maps == (2 * 5, 2 * 5)
    assert plan[("Keras ResNet50", "assess_gradient")].maps == (2 * 4, 2 * 4)  # no independent library
    assert plan[("PyTorch CNN", "assess_deep")].passes == (2 * 4 * 8,) * 2
    assert plan[("PyTorch CNN", "assess_random")].forward_rows == 1 * 5 * 2 * 6  # one random order by default
    # gradient x input is not explained by the explain stage: all 6 images, then 3 maps per sanity image
    assert plan[("PyTorch CNN", "assess_gradinput")].maps == (6 + 2 * 3,) * 2


@pytest.mark.parametrize("bad", ["missing", "file", "empty"])
def test_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, bad):
    target = {"missing": tmp_path / "nope", "file": tmp_path / "f.txt", "empty": tmp_path / "empty"}[bad]
    if bad == "file":
        target.write_text("x")
    if bad == "empty":
        target.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "run_all.py"), "--data", str(target), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and str(target) in err[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_config_value_is_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("explain:\n  n_bakground: 3\n")
    assert main(["--config", str(cfg), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) n_bakground" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- end to end

TINY = [
    "--image-size",
    "32",
    "--epochs-pytorch",
    "1",
    "--epochs-keras",
    "1",
    "--n-explain",
    "2",
    "--n-background",
    "4",
    "--nsamples",
    "8",
    "--keras-weights",
    "none",
    "--seed",
    "0",
    # the assess stage's smallest useful settings: every check runs, on one sanity image
    "--assess-steps",
    "4",
    "--n-sanity",
    "1",
]

REQUIRED_MODEL_KEYS = {
    "test_accuracy",
    "test_accuracy_ci95",
    "per_class",
    "confusion_matrix",
    "history",
    "train_seconds",
}


def _run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "run_all.py"),
            "--data",
            str(data),
            "--out",
            str(out),
            *TINY,
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def published_study(tmp_path_factory, split_folders):
    """The tiny published study (both arms, every stage), run once through the command line:
    ``.data``, ``.out`` and ``.first`` (the finished process)."""
    tmp_path = tmp_path_factory.mktemp("study")
    # A folder name cannot hold "/", so the markup in this class name is an unclosed tag and an ampersand;
    # test_report.py checks a class literally named <b>x</b>.
    data = split_folders(tmp_path / "ds", classes=("<b>x&y", "bees", "wasps"), junk=True)
    out = tmp_path / "out"
    return SimpleNamespace(data=data, out=out, first=_run(data, out))


@pytest.mark.slow
@pytest.mark.pytorch
@pytest.mark.keras
def test_end_to_end_study_and_cached_rerun(published_study):
    import json

    data, out, first = published_study.data, published_study.out, published_study.first
    assert first.returncode == 0, first.stderr[-3000:]
    for name in (
        "metrics.json",
        "report.md",
        "report.html",
        "split.csv",
        "config.yaml",
        "pytorch_cnn/model.pt",
        "keras_resnet50/model.keras",
        "pytorch_cnn/attributions_deep.npz",
        "keras_resnet50/attributions_gradient.npz",
    ):
        assert (out / name).is_file(), name
    assert list(out.glob("**/.*.tmp*")) == []  # nothing half-written

    m = json.loads((out / "metrics.json").read_text())
    classes = ["<b>x&y", "bees", "wasps"]
    assert m["dataset"]["classes"] == classes and m["dataset"]["counts"]["test"] == {c: 4 for c in classes}
    assert m["dataset"]["skipped"] == [{"path": ".DS_Store", "reason": "not an image"}]
    for arm in ("pytorch_cnn", "keras_resnet50"):
        model = m["models"][arm]
        assert REQUIRED_MODEL_KEYS <= set(model)
        lo, hi = model["test_accuracy_ci95"]
        assert 0 <= lo <= model["test_accuracy"] <= hi <= 1
        assert np.array(model["confusion_matrix"]).sum() == 12
        assert set(model["per_class"]) == set(classes)
        assert len(model["history"]["train_loss"]) == 1 and model["train_seconds"] > 0
        for method in ("deep", "gradient"):
            a = m["attributions"][arm][method]
            assert a["n_images"] == 2 and a["n_background"] == 4 and a["seconds"] > 0
        assert m["attributions"][arm]["deep"]["additivity_max_abs_error"] < 1e-3
    assert m["models"]["keras_resnet50"]["backbone_weights"].startswith("random")
    assert any("not transfer learning" in f for f in m["fallbacks"])
    c = m["comparison"]
    assert 0 <= c["mcnemar_p"] <= 1 and c["only_pytorch_correct"] >= 0 and c["only_keras_correct"] >= 0
    assert len(m["agreement"]["pairs"]) == 6
    assert {"python", "torch", "tensorflow", "keras", "shap", "numpy"} <= set(m["versions"])
    assert m["config"]["pytorch"]["epochs"] == 1

    html = (out / "report.html").read_text()
    assert "&lt;b&gt;x&amp;y" in html and "<b>x" not in html
    assert "not transfer learning" in (out / "report.md").read_text()

    # "Is it the framework?": the PyTorch CNN carried into Keras predicts and explains as it does
    check = m["framework_check"]
    assert (check["source"], check["twin"], check["other"]) == ("pytorch_cnn", "keras_twin_cnn", "keras_resnet50")
    assert check["twin_test_accuracy"] == check["test_accuracy"] and check["predictions_differ"] == 0
    deep, gradient = check["methods"]["deep"], check["methods"]["gradient"]
    # float rounding: below the rule's own reference (1e-3, far above float32's bound for this tiny CNN)
    assert deep["verdict"]["status"] == "pass" and deep["max_relative_difference"] <= deep["verdict"]["reference"]
    assert deep["rho"]["mean"] > 0.99 and gradient["n_maps"] > 0
    assert (out / "keras_twin_cnn" / "attributions_deep.npz").is_file()
    assert "keras_twin_cnn" not in m["models"]  # a check, not a model of the study's tables
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert "Is it the framework?" in text and "its twin" in text, report

    # a second identical run finds every stage current (evaluate and report included): no arm
    # process starts, and metrics.json and the reports are left as they were
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "report.md", "report.html")}
    second = _run(data, out)
    assert second.returncode == 0, second.stderr[-3000:]
    cached = [line for line in second.stderr.splitlines() if line.startswith("[stage]") and " cached (key " in line]
    # 8 stages per arm (train, predict, 2 explain, 4 assess), the twin's 4 (carry, predict, 2 explain), evaluate, report
    assert len(cached) == 2 * 8 + 4 + 2 and "starting the" not in second.stderr
    assert "report                   cached" in second.stderr
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.slow
@pytest.mark.pytorch
@pytest.mark.keras
def test_a_factorial_study_adds_two_arms_to_the_published_ones(published_study, tmp_path):
    """``--design factorial`` on a copy of the published study: its two arms' stages are reused as
    they are (their keys do not depend on the design), the Keras CNN and the PyTorch ResNet50 run
    every stage, and evaluate and report take all four."""
    import json

    assert published_study.first.returncode == 0, published_study.first.stderr[-3000:]
    out = tmp_path / "out"
    shutil.copytree(published_study.out, out)
    new_arms = ("keras_cnn", "pytorch_resnet50")
    flags = [flag for key in new_arms for flag in (f"--epochs-{key.replace('_', '-')}", "1")]
    args = ["--data", str(published_study.data), "--out", str(out), *TINY, *flags, "--design", "factorial"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    names = ["pytorch_cnn", "keras_resnet50", "keras_cnn", "pytorch_resnet50"]
    assert list(m["models"]) == names and m["config"]["design"] == "factorial"
    status = {r["stage"]: r["status"] for r in m["stages"]}
    steps = ("train", "explain_deep", "assess_deep")
    assert all(status[f"{step} {key}"] == "cached" for key in ("pytorch", "keras") for step in steps)
    assert all(status[f"{step} {key}"] == "ran" for key in new_arms for step in steps)
    for name in names:
        assert m["attributions"][name]["deep"]["n_images"] == 2
        assert m["attributions"][name]["deep"]["additivity_max_abs_error"] < 1e-3
    assert set(m["quality"]["arms"]) == set(names)
    # both ResNet50s hold one backbone: the PyTorch arm's is the Keras arm's, converted
    import keras

    from keras_impl import resnet50 as kr
    from keras_impl.weights import weights_digest

    keras_model = keras.saving.load_model(out / "keras_resnet50" / "model.keras", safe_mode=True)
    info = json.loads((out / "pytorch_resnet50" / "train.json").read_text())["info"]
    assert info["backbone_digest"] == weights_digest(kr.backbone_of(keras_model))
    assert info["backbone_weights"] == m["models"]["keras_resnet50"]["backbone_weights"] == "random (none requested)"
    report = (out / "report.md").read_text()
    assert all(title in report for title in ("PyTorch CNN", "Keras ResNet50", "Keras CNN", "PyTorch ResNet50"))
    # the 2 x 2: the framework effect per architecture, the architecture effect per framework
    f = m["factorial"]
    assert f["cells"] == {
        "CNN": {"PyTorch": "pytorch_cnn", "Keras": "keras_cnn"},
        "ResNet50": {"PyTorch": "pytorch_resnet50", "Keras": "keras_resnet50"},
    }
    assert [(c["factor"], c["held"]) for c in f["comparisons"]] == [
        ("framework", "CNN"),
        ("framework", "ResNet50"),
        ("architecture", "PyTorch"),
        ("architecture", "Keras"),
    ]
    assert all(c["mcnemar_p"] <= c["mcnemar_p_holm"] <= 1 for c in (x | x["comparison"] for x in f["comparisons"]))
    assert set(f["defaults"]) == {"CNN", "ResNet50"} and "comparison" not in m  # the 2 x 2 replaces the pair's test
    assert all(status[f"{step} keras_twin"] == "cached" for step in ("train", "explain_deep"))  # its source is too
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert "Framework or architecture?" in text and "Is it the framework?" in text, name
