"""The explainers' peak memory and speed against their batch knob, per arm, in fresh processes.

Gradient SHAP runs its samples through the model in batches of ``Arm.explain_batch_size``
(shap's ``batch_size``; 50, shap's default, unless changed); Deep SHAP has no batch setting
(shap runs one image and class at a time over 2 x ``n_background`` rows) and is measured
once for reference. Each (arm, method, batch size) runs in a process of its own, so its peak
resident memory (``ru_maxrss``) is its own: the process loads a finished study's trained arm,
explained images and background (:func:`benchmarks.efficiency.load_study`), records its peak,
explains the images' predicted classes twice (the first call builds TensorFlow's graphs, the
second is timed as the warm rate) and records the peak again. The maps must not depend on the
batch size (the same samples, grouped differently): the largest difference to the first batch
size's maps is reported.

    python -m benchmarks.micro.explainer_memory --study /work/runs/insects-after --sizes 50 25 16 8

Results go to stdout as JSON and a Markdown table for benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.measure import call_seconds, in_child, peak_mb


def child(study: str, arm_key: str, method: str, batch: int, maps_out: str) -> dict:
    """One (arm, method, batch size) in this fresh process: peaks, cold and warm seconds; maps to ``maps_out``."""
    from benchmarks.efficiency import load_study
    from common import registry

    spec = registry.arm_spec(arm_key)
    cfg, _, images, background, arm, *_ = load_study(Path(study), spec)
    loaded = peak_mb()
    arm.explain_batch_size = batch
    classes = arm.predict_proba(images).argmax(axis=1)
    kwargs = dict(nsamples=cfg.explain.nsamples, seed=cfg.seed, output=cfg.explain.output, classes=classes)
    maps = []

    def explain() -> None:
        maps.clear()  # one call's maps alive at a time
        maps.append(arm.explain(images, background, method, **kwargs))

    cold, warm = call_seconds(explain, 2)
    np.save(maps_out, maps[-1].attributions)
    return {
        "arm": spec.title,
        "method": method,
        "batch": batch,
        "images": len(images),
        "nsamples": cfg.explain.nsamples if method == "gradient" else None,
        "peak_after_load_mb": round(loaded),
        "peak_mb": round(peak_mb()),
        "cold_s": round(cold, 2),
        "warm_s": round(warm, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, required=True, help="a finished study's folder (both arms trained)")
    p.add_argument("--arms", nargs="+", default=["keras", "pytorch"])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 25, 16, 8], help="Gradient SHAP batch sizes")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arm_key in args.arms:
            reference = None
            for method, batch in [("deep", args.sizes[0])] + [("gradient", b) for b in args.sizes]:
                maps = Path(tmp) / f"{arm_key}-{method}-{batch}.npy"
                settings = {"arm_key": arm_key, "method": method, "batch": batch, "maps_out": maps}
                row = in_child(
                    "benchmarks.micro.explainer_memory:child", arm_key, study=args.study.resolve(), **settings
                )
                if method == "gradient":
                    a = np.load(maps)
                    reference = a if reference is None else reference
                    row["max_abs_diff_vs_first_size"] = float(np.max(np.abs(a - reference)))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"study": str(args.study), "rows": rows}, indent=1))
    print("\n| arm | method | batch | peak after loading (MB) | peak after explaining (MB) | cold s | warm s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        batch = r["batch"] if r["method"] == "gradient" else "—"
        print(
            f"| {r['arm']} | {r['method']} | {batch} | {r['peak_after_load_mb']:,} | {r['peak_mb']:,} "
            f"| {r['cold_s']} | {r['warm_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
