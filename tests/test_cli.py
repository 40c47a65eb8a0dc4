"""The command line as a new user meets it: every bad value is answered before any work,
with exit status 2, one line on stderr, and nothing written; --help works everywhere."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import registry
from experiments.run_all import main

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "experiments" / "run_all.py"


def _cli(*args: str, cwd: Path, python: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "STUDY_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([*python, str(RUN_ALL), *args], capture_output=True, text=True, cwd=cwd, env=env)


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


# (flags, a piece of the one-line message); {tmp} is the test's folder. Rows that held before
# issue 15 and rows it fixed (seed, the image-size bound, YAML types, --out in the way).
BAD_VALUES = {
    "image size 0": (["--image-size", "0"], "data.image_size must be between 32 and 512"),
    "image size 100000": (["--image-size", "100000"], "data.image_size must be between 32 and 512 pixels, got 100000"),
    "n-explain 0": (["--n-explain", "0"], "explain.n_explain must be positive"),
    "nsamples 0": (["--nsamples", "0"], "explain.nsamples must be positive"),
    "negative epochs": (["--epochs-pytorch", "-1"], "epochs and batch_size must be positive"),
    "seed -1": (["--seed", "-1"], "seed must be between 0 and 4294967295, got -1"),
    "max image pixels 0": (["--max-image-pixels", "0"], "data.max_image_pixels must be positive, got 0"),
    "missing config": (["--config", "{tmp}/nope.yaml"], "config file not found"),
    "missing keras weights": (["--keras-weights", "{tmp}/no.h5"], "keras.weights must be"),
    "unknown yaml key": (["--config", "yaml:explain:\n  n_bakground: 3\n"], "unknown key(s) n_bakground"),
    "epochs: three": (
        ["--config", 'yaml:pytorch:\n  epochs: "three"\n'],
        "pytorch.epochs must be an integer, got 'three'",
    ),
    "image_size: '32'": (["--config", 'yaml:data:\n  image_size: "32"\n'], "data.image_size must be an integer"),
    "epochs: 1.5": (["--config", "yaml:keras:\n  epochs: 1.5\n"], "keras.epochs must be an integer, got 1.5 (float)"),
    "n_background: 4.5": (["--config", "yaml:explain:\n  n_background: 4.5\n"], "explain.n_background must be an"),
    "seed: yes": (["--config", "yaml:seed: yes\n"], "seed must be an integer, got True (bool)"),
    "out is a file": (["--out", "{tmp}/a_file"], "is a file"),
    "out below a file": (["--out", "{tmp}/a_file/sub"], "is a file"),
}


@pytest.mark.parametrize("row", list(BAD_VALUES))
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, split_folders, monkeypatch, capsys, caplog, row):
    # In this process (run_all.main, as the script calls it): an interpreter per row would cost
    # the suite a second each. What a separate process would print is all here: the error lines
    # on stderr (capsys) and every log record (caplog; the script logs to stderr from INFO up).
    flags, message = BAD_VALUES[row]
    data = split_folders(tmp_path / "ds", n_train=5, n_test=2)
    (tmp_path / "a_file").write_text("not a folder")
    flags = [
        _yaml(tmp_path, f.removeprefix("yaml:")) if f.startswith("yaml:") else f.format(tmp=tmp_path) for f in flags
    ]
    out = tmp_path / "out"
    # --dry-run: a value that slipped through would only write the split, not run a study
    args = ["--data", str(data), "--out", str(out), "--dry-run", *flags]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()] + [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0] and captured.out == ""
    assert not out.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that permissions apply to")
def test_read_only_out_is_one_line(tmp_path, split_folders):
    data = split_folders(tmp_path / "ds", n_train=5, n_test=2)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        proc = _cli("--data", str(data), "--out", str(out), "--image-size", "32", cwd=tmp_path)
    finally:
        out.chmod(0o755)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: cannot write")
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux only: /proc refuses new folders, even to root")
def test_out_that_cannot_be_created_is_one_line(tmp_path, split_folders):
    data = split_folders(tmp_path / "ds", n_train=5, n_test=2)
    proc = _cli("--data", str(data), "--out", "/proc/study-out", "--image-size", "32", "--dry-run", cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[stage]")]
    assert proc.returncode == 2 and lines[-1].startswith("error: cannot create the output folder /proc/study-out")
    assert "Traceback" not in proc.stderr


def test_help_lists_every_flag_even_without_the_dependencies(tmp_path):
    # python -S: no site-packages at all (no yaml, numpy, PIL), as a system python3 before set-up
    for python in ((sys.executable,), (sys.executable, "-S")):
        proc = _cli("--help", cwd=tmp_path, python=python)
        assert proc.returncode == 0, proc.stderr
        for flag in ("--data", "--out", "--config", "--seed", "--cache-dir", "--deterministic", "--only", "--force"):
            assert flag in proc.stdout
        assert "--design {published,factorial}" in proc.stdout
        # the pixel limit's default and why (the help text wraps lines: compare it as one line)
        text = " ".join(proc.stdout.split())
        assert "--max-image-pixels N" in text and "67108864 = 8192x8192" in text and "512 MiB" in text
        for spec in registry.trained_arms():
            assert f"--epochs-{spec.key.replace('_', '-')}" in proc.stdout
        assert "(default: " in proc.stdout


def test_missing_dependencies_are_one_line_with_the_set_up(tmp_path):
    proc = _cli("--data", str(tmp_path), cwd=tmp_path, python=(sys.executable, "-S"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks the study's dependencies" in lines[0] and "make study" in lines[0]


@pytest.mark.parametrize("flags", [["--no-such-flag"], ["--only", "tensorflow"], ["--seed", "one"]])
def test_unknown_flags_and_choices_are_refused_by_name(tmp_path, flags):
    proc = _cli(*flags, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]  # argparse: its usage line, then the error
    assert error.startswith("run_all.py: error:") and flags[-1] in error
    assert list(tmp_path.iterdir()) == []
