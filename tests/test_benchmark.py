"""The benchmark: its bookkeeping (fast) and, marked slow, one tiny run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.benchmark import BENCHMARK_VERSION, BenchmarkFile, parse_args, render_markdown
from benchmarks.efficiency import background_like_batch, pass_formula
from benchmarks.scale import source_images
from benchmarks.study import seed_summary
from benchmarks.versus import compare_figures, compare_metrics
from common.registry import ARMS, METHODS

REPO = Path(__file__).resolve().parents[1]


def make_jpeg_dataset(root: Path, n_train: int = 12, n_test: int = 4) -> Path:
    """train/ and test/ with three classes of small non-square JPEGs (a bright patch whose place is the class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, cls in enumerate(("ants", "bees", "wasps")):
            for i in range(n):
                img = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
                img[10:20, 4 + 14 * k : 14 + 14 * k, k] = 255
                path = root / split / cls / f"{i:02d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path, quality=95)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


# ----------------------------------------------------------------------------- fast


def test_pass_counts_follow_shap():
    # Deep SHAP: shap doubles the background (tiled image + background rows); Gradient SHAP: nsamples rows
    assert METHODS["deep"].passes(6, 3, 16, 64) == 6 * 3 * 2 * 16
    assert METHODS["gradient"].passes(6, 3, 16, 64) == 6 * 3 * 64
    assert pass_formula("deep", 8, 16, 64) == "8 maps (image x class) x 2 x 16 background"
    assert pass_formula("gradient", 8, 16, 64) == "8 maps (image x class) x 64 samples"


def test_scale_is_asked_for_and_its_sizes_are_checked():
    assert "scale" not in parse_args([]).parts  # the default benchmark does not build 20,000 images
    assert parse_args(["--parts", "scale", "--scale-sizes", "500,100,500"]).scale_sizes == [100, 500]
    for bad in ("ten", "0,100", ""):
        with pytest.raises(SystemExit):
            parse_args(["--scale-sizes", bad])


def test_scale_sources_take_turns_over_the_classes(tmp_path):
    for cls, n in (("a", 3), ("b", 1), ("c", 2)):
        for i in range(n):
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"{i}.jpg").write_bytes(b"")
    order = [(c, p.name) for c, p in source_images(tmp_path)]
    assert order == [("a", "0.jpg"), ("b", "0.jpg"), ("c", "0.jpg"), ("a", "1.jpg"), ("a", "2.jpg"), ("c", "1.jpg")]


def test_arm_choices_come_from_the_registry():
    assert parse_args(["--only", next(iter(ARMS))]).only == next(iter(ARMS))
    with pytest.raises(SystemExit):
        parse_args(["--only", "jax"])


def test_background_like_batch_cycles_background_then_images():
    bg, x = np.zeros((2, 4, 4, 3), np.uint8), np.ones((1, 4, 4, 3), np.uint8)
    batch = background_like_batch(bg, x, 5)
    assert batch.shape == (5, 4, 4, 3) and [int(b.max()) for b in batch] == [0, 0, 1, 0, 0]


def test_parts_are_checked_and_ordered():
    assert parse_args(["--parts", "seeds,stages"]).parts == ["stages", "seeds"]
    with pytest.raises(SystemExit):
        parse_args(["--parts", "stages,speed"])


def test_seed_summary_mean_spread_and_published():
    runs = {
        str(s): {
            "models": {
                "pytorch_cnn": {"test_accuracy": a},
                "keras_resnet50": {"test_accuracy": 0.9, "backbone_weights": "imagenet"},
            }
        }
        for s, a in ((0, 1.0), (1, 0.9), (2, 0.95))
    }
    s = seed_summary(runs)
    assert s["pytorch_cnn"]["n_seeds"] == 3 and s["pytorch_cnn"]["mean"] == pytest.approx(0.95)
    assert s["pytorch_cnn"]["std"] == pytest.approx(0.05)
    assert (s["pytorch_cnn"]["min"], s["pytorch_cnn"]["max"]) == (0.9, 1.0)
    assert s["pytorch_cnn"]["published"] == 1.0 and s["keras_resnet50"]["published"] == 0.972
    assert s["keras_resnet50"]["backbone_weights"] == ["imagenet"] and s["keras_resnet50"]["std"] == 0.0


def test_finished_parts_are_kept_for_the_same_config_only(tmp_path):
    header = {
        "benchmark_version": BENCHMARK_VERSION,
        "date": "d",
        "command": "c",
        "machine": {},
        "data": "x",
        "config": {"seed": 0},
    }
    first = BenchmarkFile(tmp_path, header, ["stages", "seeds"])
    first.set_part("stages", {"status": "failed", "error": "boom"})
    again = BenchmarkFile(tmp_path, header, ["seeds"])  # a later run of another part keeps stages
    assert again.doc["parts"]["stages"]["error"] == "boom" and again.doc["parts"]["seeds"] == {"status": "pending"}
    md = (tmp_path / "benchmark.md").read_text()
    assert md.startswith("# Benchmark") and "**failed**: boom" in md and "## Seeds" in md and "not finished" in md
    assert "- command: `c`" in md
    other = BenchmarkFile(tmp_path, {**header, "config": {"seed": 1}}, ["seeds"])  # another config: start afresh
    assert "stages" not in other.doc["parts"]
    assert render_markdown({"parts": {}}).startswith("# Benchmark")


def test_markdown_escapes_text_and_survives_a_broken_part():
    doc = {
        "command": "python -m benchmarks.benchmark",
        "data": "a|b",
        "parts": {
            "stages": {"status": "failed", "error": "bad | *cell*"},
            "published": {"status": "done", "speedup": {}},
        },
    }  # no "published" record: cannot render
    md = render_markdown(doc)
    assert "**failed**: bad \\| \\*cell\\*" in md and "- data: a\\|b;" in md
    assert "## Published" in md and "could not render this part" in md


def test_versus_compares_metrics_without_timings_and_figures_pixel_for_pixel(tmp_path):
    before = {
        "config": {"out": "a", "seed": 0},
        "stages": [1],
        "execution": {},
        "m": {"train_seconds": 1.0, "x": [1.0, 2]},
    }
    after = {
        "config": {"out": "b", "seed": 0},
        "stages": [2],
        "execution": {"j": 2},
        "m": {"train_seconds": 9.0, "x": [1.0, 2]},
    }
    assert compare_metrics(before, after)["equal"]
    after["m"]["x"][0], after["new"] = 1.25, True
    result = compare_metrics(before, after)
    assert not result["equal"] and result["max_abs_difference"] == 0.25
    assert result["differences"] == [
        {"path": "m.x.0", "before": 1.0, "after": 1.25},
        {"path": "new", "before": "(missing)", "after": True},
    ]
    for run, value in (("before", 0), ("after", 0), ("other", 7)):
        (tmp_path / run).mkdir()
        pixels = np.zeros((4, 5, 3), np.uint8)
        pixels[1, 2] = value
        Image.fromarray(pixels).save(tmp_path / run / "a.png")
    assert compare_figures(tmp_path / "before", tmp_path / "after")["equal"]
    result = compare_figures(tmp_path / "before", tmp_path / "other")
    assert not result["equal"] and result["differing"] == ["a.png"]
    assert result["figures"]["a.png"] == {"equal": False, "pixels_differing": 1, "max_abs_difference": 7}


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.pytorch
def test_benchmark_end_to_end_pytorch(tmp_path):
    data = make_jpeg_dataset(tmp_path / "ds")
    out = tmp_path / "bench"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.benchmark",
        "--data",
        str(data),
        "--out",
        str(out),
        "--only",
        "pytorch",
        "--image-size",
        "32",
        "--epochs-pytorch",
        "1",
        "--n-explain",
        "2",
        "--n-background",
        "4",
        "--nsamples",
        "4",
        "--published-nsamples",
        "4",
        "--raw-seconds",
        "0.05",
        "--explain-repeats",
        "1",
        "--seeds",
        "0",
        "--assess-steps",
        "4",
        "--n-sanity",
        "1",
        "-q",
    ]
    env = {**os.environ, "STUDY_CACHE_DIR": str(tmp_path / "cache")}  # keep the repository's cache clean
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    doc = json.loads((out / "benchmark.json").read_text())
    assert {"benchmark_version", "date", "command", "machine", "config", "parts"} <= set(doc)
    assert doc["command"].startswith("python -m benchmarks.benchmark --data")
    assert {"platform", "cpu_count", "torch_num_threads", "versions"} <= set(doc["machine"])
    assert {"torch", "tensorflow", "shap"} <= set(doc["machine"]["versions"])
    parts = doc["parts"]
    assert {k: v["status"] for k, v in parts.items()} == dict.fromkeys(
        ("stages", "efficiency", "published", "seeds"), "done"
    )

    stages = {s["stage"]: s for s in parts["stages"]["stages"]}
    assert set(stages) == {
        "data",
        "train pytorch",
        "predict pytorch",
        "explain_deep pytorch",
        "explain_gradient pytorch",
        "assess_random pytorch",
        "assess_deep pytorch",
        "assess_gradient pytorch",
        "assess_gradinput pytorch",
        "evaluate",
        "report",
    }
    assert all(s["status"] == "ran" and s["seconds"] >= 0 for s in stages.values())
    assert parts["stages"]["memory"]["children_max_rss_mb"] > 0
    assert "pytorch_cnn" in parts["stages"]["arms"]

    pt = parts["efficiency"]["frameworks"]["pytorch"]
    # the study's maps (predicted+true: 2 images, 1 or 2 maps each) x 2 x 4 background rows, or x 4 samples
    deep, gradient = pt["explainers"]["deep"], pt["explainers"]["gradient"]
    assert 2 <= deep["maps"] <= 4 and deep["passes"] == deep["maps"] * 2 * 4
    assert gradient["maps"] == deep["maps"] and gradient["passes"] == gradient["maps"] * 4
    for e in pt["explainers"].values():
        assert e["efficiency"] > 0 and e["raw_images_per_second"] > 0
        assert e["max_abs_diff_vs_study"] == pytest.approx(0, abs=1e-6)  # the re-run reproduces the study's maps
    assert pt["raw"]["deep"]["batch_size"] == 8 and pt["raw"]["gradient"]["batch_size"] == 4

    pub = parts["published"]["published"]
    assert pub["pixels"]["identical"]  # torchvision's Resize on PIL = the project's decode
    assert pub["explain"]["deep"]["vs_project"]["max_rel_diff"] < 1e-4  # same model, normalised vs raw inputs
    assert pub["explain"]["gradient"]["vs_project_same_draws"]["max_rel_diff"] < 1e-4
    assert pub["same_results"]["n_test"] == 12 and pub["explain"]["gradient"]["nsamples"] == 4
    assert set(parts["published"]["speedup"]) == {
        "training",
        "training_with_decoding",
        "test_predictions",
        "deep_shap",
        "gradient_shap",
        "total",
    }

    seeds = parts["seeds"]
    assert seeds["summary"]["pytorch_cnn"]["n_seeds"] == 1 and seeds["runs"]["0"]["from"] == str(out / "study")

    md = (out / "benchmark.md").read_text()
    for heading in ("## Stages", "## Efficiency", "## Published", "## Seeds"):
        assert heading in md
    assert "| explain_deep pytorch | ran |" in md and "| pytorch_cnn | deep |" in md
    assert "| **total** |" in md and "| pytorch_cnn | 1 |" in md  # the published way's and the seeds' tables
    assert not (out / "cache").exists()  # the timed run's own cache is removed
    assert list(out.glob("**/.*.tmp*")) == []


@pytest.mark.slow
def test_benchmark_scale_part_tiny(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--parts", "scale", "--scale-sizes", "40,80"]
    cmd += ["--image-size", "32", "--only", "pytorch", "--scale-steps", "1", "--scale-dir", str(scratch)]
    cmd += ["--out", str(out), "-q"]
    env = {**os.environ, "STUDY_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    part = json.loads((out / "benchmark.json").read_text())["parts"]["scale"]
    assert part["status"] == "done" and part["sizes"] == [40, 80] and part["image_size"] == 32
    for n, run in part["runs"].items():
        for label, workers in (("data_pool", os.cpu_count()), ("data_single", 1)):
            assert run[label]["n_images"] == int(n) and run[label]["workers"] == workers
            assert sum(run[label]["n_split"].values()) == int(n) and run[label]["max_rss_mb"] > 0
        arm = run["arms"]["pytorch"]
        assert arm["n_images"] == int(n) and sum(arm["n_split"].values()) == int(n)
        assert arm["fit_images"] == min(arm["n_split"]["train"], arm["batch_size"])  # one step: bounded compute
        assert list(arm["max_rss_mb_after"])[-1] == "every batch of every split gathered"
    summary = part["summary"]
    assert summary["from"] == 40 and summary["to"] == 80 and "pytorch_cnn process" in summary["peak_growth_mb"]
    assert "## Scale" in (out / "benchmark.md").read_text()
    assert list(scratch.iterdir()) == []  # the synthetic folders and their caches are removed
