"""The study with the code of another commit against this checkout's, back to back in one run.

For a change's before/after figures (``benchmarks/BENCHMARKS.md``) and to show that it changed no
result: both checkouts run the same study command, each into its own folder and with a cache of its
own (``OUT/cache-before``, ``OUT/cache-after``) whose decoded images a dry run fills first. Written to
``OUT/versus.json``: wall times; each model's test accuracy and how the maps of the classes the newer
run explained compare with the older run's; ``metrics``, metrics.json compared value for value
(floats exactly) with timings and where the run went aside (:data:`LEFT_OUT`), each differing path
with both values and the largest absolute difference; ``figures``, every PNG under ``figures/``
compared pixel for pixel. Prints a short summary.

    git worktree add /tmp/before <commit>
    python -m benchmarks.versus --before /tmp/before --out /tmp/versus            # the default study
    python -m benchmarks.versus --before /tmp/before --out /tmp/versus -- \\
        --data ../shared/datasets/insects --config experiments/configs/insects.yaml
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from benchmarks.measure import REPO_ROOT, run_all
from common.explanation import Explanation
from common.io import read_json, write_json_atomic

MISSING = "(missing)"
LEFT_OUT = "every key containing 'seconds', stages, execution and config.out"


def left_out(path: tuple) -> bool:
    """Whether metrics.json's value at ``path`` is a timing or says where the run went (:data:`LEFT_OUT`)."""
    return "seconds" in str(path[-1]) or path[-1] in ("stages", "execution") or path == ("config", "out")


def differences(a: Any, b: Any, skip: Callable[[tuple], bool], path: tuple = ()) -> list[dict[str, Any]]:
    """Each path where two JSON documents differ (numbers exactly; NaN equals NaN), but those ``skip`` names."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in dict.fromkeys([*a, *b]) if not skip((*path, k))]
        return [d for k in keys for d in differences(a.get(k, MISSING), b.get(k, MISSING), skip, (*path, k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, skip, (*path, i))]
    nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if a == b or nan else [{"path": ".".join(map(str, path)), "before": a, "after": b}]


def compare_metrics(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Two runs' metrics.json, timings aside: equal or not, each difference and the largest absolute one."""
    diffs = differences(before, after, left_out)
    number = lambda x: isinstance(x, int | float) and not isinstance(x, bool)
    gaps = [abs(d["after"] - d["before"]) for d in diffs if number(d["before"]) and number(d["after"])]
    return {
        "equal": not diffs,
        "left_out": LEFT_OUT,
        "n_differences": len(diffs),
        "max_abs_difference": max(gaps, default=None),
        "differences": diffs,
    }


def compare_figures(before: Path, after: Path) -> dict[str, Any]:
    """Every PNG under two ``figures/`` folders, pixel for pixel (as RGBA)."""
    names = sorted({p.relative_to(d).as_posix() for d in (before, after) if d.is_dir() for p in d.rglob("*.png")})
    figures: dict[str, Any] = {}
    for name in names:
        missing = [label for label, d in (("before", before), ("after", after)) if not (d / name).is_file()]
        if missing:
            figures[name] = {"equal": False, "missing_in": missing}
            continue
        a, b = (np.asarray(Image.open(d / name).convert("RGBA"), dtype=np.int16) for d in (before, after))
        if a.shape != b.shape:
            figures[name] = {"equal": False, "shape_before": list(a.shape), "shape_after": list(b.shape)}
            continue
        diff = np.abs(a - b)
        figures[name] = {
            "equal": not diff.any(),
            "pixels_differing": int(diff.any(axis=-1).sum()),
            "max_abs_difference": int(diff.max(initial=0)),
        }
    differing = [name for name, f in figures.items() if not f["equal"]]
    return {"equal": not differing, "compared": len(names), "differing": differing, "figures": figures}


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


def compare_models(out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Per model: the test accuracies and, per method, the maps compared."""
    models = {}
    for name, model in metrics["after"]["models"].items():
        maps = {}
        for method in metrics["after"]["attributions"].get(name, {}):
            paths = [out / run / name / f"attributions_{method}.npz" for run in ("before", "after")]
            if paths[0].exists():
                maps[method] = compare_maps(*(Explanation.load(p) for p in paths))
        before = metrics["before"]["models"][name]["test_accuracy"]
        models[name] = {"test_accuracy_before": before, "test_accuracy_after": model["test_accuracy"], "maps": maps}
    return models


def summary(result: dict[str, Any]) -> str:
    """A few lines: the commits and times, then whether metrics.json and the figures are the same."""
    m, f, w = result["metrics"], result["figures"], result["wall_seconds"]
    lines = [
        f"{result['commits']['before']} -> {result['commits']['after']}: {w['before']:.1f} s -> {w['after']:.1f} s"
    ]
    lines[0] += f" ({result['speedup']:.2f}x)"
    lines.append(
        f"metrics.json ({m['left_out']} aside): " + ("equal" if m["equal"] else f"{m['n_differences']} differ")
    )
    lines += [f"  {d['path']}: {d['before']!r} -> {d['after']!r}" for d in m["differences"][:10]]
    if not m["equal"]:
        lines.append(f"  largest absolute difference: {m['max_abs_difference']}")
    same = f"all {f['compared']} equal pixel for pixel" if f["equal"] else f"differ: {', '.join(f['differing'])}"
    lines.append(f"figures: {same}")
    for name, model in result["models"].items():
        rel = {k: v["max_relative_difference"] for k, v in model["maps"].items()}
        lines.append(f"{name}: accuracy {model['test_accuracy_before']} -> {model['test_accuracy_after']}; maps {rel}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="a checkout (git worktree) of the older commit")
    p.add_argument("--out", type=Path, required=True, help="folder for both studies and versus.json")
    p.add_argument("study_args", nargs="*", help="flags for run_all.py, after --")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkouts = {"before": args.before.resolve(), "after": REPO_ROOT}
    for name, checkout in checkouts.items():  # decoded images into each run's own cache
        run_all(
            ["--out", str(out / f"warm-{name}"), "--dry-run", *args.study_args], out / f"cache-{name}", checkout, True
        )
    commits = {
        name: subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
        ).stdout.strip()
        for name, checkout in checkouts.items()
    }
    seconds = {
        name: run_all(["--out", str(out / name), "--force", *args.study_args], out / f"cache-{name}", checkout)
        for name, checkout in checkouts.items()
    }
    metrics = {name: read_json(out / name / "metrics.json") for name in checkouts}
    result: dict[str, Any] = {
        "command": "python -m benchmarks.versus " + " ".join(sys.argv[1:] if argv is None else argv),
        "commits": commits,
        "wall_seconds": seconds,
        "speedup": seconds["before"] / seconds["after"],
        "stage_seconds": {
            k: {s["stage"]: round(s["seconds"], 1) for s in m["stages"] if s["status"] == "ran"}
            for k, m in metrics.items()
        },
        "models": compare_models(out, metrics),
        "metrics": compare_metrics(metrics["before"], metrics["after"]),
        "figures": compare_figures(out / "before" / "figures", out / "after" / "figures"),
    }
    write_json_atomic(out / "versus.json", result)
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
