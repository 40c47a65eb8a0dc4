"""The command line: dry run, bad input, and (marked slow) the whole study end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.run_all import main

REPO = Path(__file__).resolve().parents[1]


def make_folder_dataset(root: Path, classes=("ants", "bees", "wasps"), n_train=10, n_test=4, size=32) -> Path:
    """train/ and test/ folders of small, learnable images (a bright square whose position is the class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, cls in enumerate(classes):
            for i in range(n):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                s = size // 4
                x0 = [2, size // 2 - s // 2, size - s - 2][k % 3]
                y0 = int(rng.integers(2, size - s - 2))
                img[y0 : y0 + s, x0 : x0 + s, k % 3] = 255
                p = root / split / cls / f"{i:02d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def test_dry_run_writes_split_and_prints_counts(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    rc = main(["--data", str(data), "--out", str(out), "--dry-run", "--image-size", "16"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ants" in printed and "skipped files: 1" in printed and ".DS_Store: not an image" in printed
    lines = (out / "split.csv").read_text().splitlines()
    assert lines[0] == "path,label,split,sha256" and len(lines) == 1 + 42
    assert not (out / "metrics.json").exists()  # no training in a dry run


@pytest.mark.parametrize("bad", ["missing", "file", "empty"])
def test_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, bad):
    target = {"missing": tmp_path / "nope", "file": tmp_path / "f.txt", "empty": tmp_path / "empty"}[bad]
    if bad == "file":
        target.write_text("x")
    if bad == "empty":
        target.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "run_all.py"), "--data", str(target),
                           "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
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
