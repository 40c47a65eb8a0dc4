"""The study with the code of another commit against this checkout's, back to back in one run.

For a change's before/after figures (``benchmarks/BENCHMARKS.md``): both run the same study
command (same data, config and flags, each into its own folder and with a fresh cache
folder of its own, ``OUT/cache-before`` and ``OUT/cache-after``, whose decoded images a dry
run fills first: neither pays for decoding, neither reuses the other's Keras features), one
after the other on the same machine. Recorded: the wall times, each model's test accuracy
and, per arm and method, how the maps of the classes the newer run explained compare with
the older run's maps of the same classes.

    git worktree add /tmp/before <commit>
    python -m benchmarks.versus --before /tmp/before --out /tmp/versus            # the default study
    python -m benchmarks.versus --before /tmp/before --out /tmp/versus -- \\
        --data ../shared/datasets/insects --config experiments/configs/insects.yaml

Writes ``OUT/versus.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from common.explanation import Explanation
from common.io import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_study(checkout: Path, out: Path, study_args: list[str], env: dict[str, str]) -> float:
    """Run ``experiments/run_all.py`` of ``checkout`` into ``out`` (every stage); its wall seconds."""
    cmd = [sys.executable, str(checkout / "experiments" / "run_all.py"), "--out", str(out), "--force", *study_args]
    env = {**env, "PYTHONPATH": str(checkout)}
    print(f"$ (cd {checkout} && {' '.join(cmd)})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=checkout, env=env, check=True)
    return time.perf_counter() - t0


def compare_maps(before: Explanation, after: Explanation) -> dict[str, Any]:
    """The after run's maps against the before run's maps of the same image and class."""
    rows, cols = np.nonzero(after.explained_classes >= 0)
    classes = after.explained_classes[rows, cols]
    hit = before.explained_classes[rows] == classes[:, None]
    keep = hit.any(axis=1)
    rows, cols, hit = rows[keep], cols[keep], hit[keep]
    new = after.attributions[rows, cols].astype(np.float64)
    old = before.attributions[rows, hit.argmax(axis=1)].astype(np.float64)
    scale = np.abs(old).reshape(len(old), -1).max(axis=1)
    rel = np.abs(new - old).reshape(len(old), -1).max(axis=1) / np.where(scale > 0, scale, 1)
    rho = [spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(new.sum(-1), old.sum(-1), strict=True)]
    return {
        "maps_compared": int(len(rows)),
        "maps_after": after.n_maps,
        "maps_before": before.n_maps,
        "max_relative_difference": float(rel.max()) if len(rel) else None,
        "mean_spearman": float(np.nanmean(rho)) if len(rho) else None,
        "seconds_before": before.seconds,
        "seconds_after": after.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="a checkout (git worktree) of the older commit")
    p.add_argument("--out", type=Path, required=True, help="folder for both studies and versus.json")
    p.add_argument("study_args", nargs="*", help="flags for run_all.py, after --")
    args = p.parse_args(argv)
    env = dict(os.environ)
    args.out.mkdir(parents=True, exist_ok=True)
    # A fresh cache per checkout, decoded images warmed by a dry run, so neither pays for decoding
    # and neither reuses the other's Keras features.
    checkouts = {"before": args.before.resolve(), "after": REPO_ROOT}
    envs = {name: {**env, "STUDY_CACHE_DIR": str(args.out / f"cache-{name}")} for name in checkouts}
    for name, checkout in checkouts.items():
        subprocess.run(
            [sys.executable, "experiments/run_all.py", "--out", str(args.out / f"warm-{name}"), "--dry-run"]
            + args.study_args,
            cwd=checkout,
            env={**envs[name], "PYTHONPATH": str(checkout)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    commits = {}
    for name, checkout in (("before", args.before.resolve()), ("after", REPO_ROOT)):
        commits[name] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
        ).stdout.strip()
    seconds = {name: run_study(checkouts[name], args.out / name, args.study_args, envs[name]) for name in checkouts}
    metrics = {k: json.loads((args.out / k / "metrics.json").read_text()) for k in seconds}
    result: dict[str, Any] = {
        "command": "python -m benchmarks.versus " + " ".join(sys.argv[1:] if argv is None else argv),
        "commits": commits,
        "wall_seconds": seconds,
        "speedup": seconds["before"] / seconds["after"],
        "stage_seconds": {
            k: {s["stage"]: round(s["seconds"], 1) for s in m["stages"] if s["status"] == "ran"}
            for k, m in metrics.items()
        },
        "models": {},
    }
    for name, model in metrics["after"]["models"].items():
        before_model = metrics["before"]["models"][name]
        entry: dict[str, Any] = {
            "test_accuracy_before": before_model["test_accuracy"],
            "test_accuracy_after": model["test_accuracy"],
            "maps": {},
        }
        for method in metrics["after"]["attributions"].get(name, {}):
            path_before = args.out / "before" / name / f"attributions_{method}.npz"
            path_after = args.out / "after" / name / f"attributions_{method}.npz"
            if path_before.exists():
                entry["maps"][method] = compare_maps(Explanation.load(path_before), Explanation.load(path_after))
        result["models"][name] = entry
    write_json_atomic(args.out / "versus.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
