"""Micro-benchmark behind the "Gradient SHAP batch size" lever: the PyTorch arm's
Gradient SHAP with different ``batch_size`` values (samples per forward/backward pass).

Loads the trained CNN of a finished insects study (the benchmark's ``OUT/study``),
explains the study's images against its background with each batch size in turn,
``--rounds`` times round-robin (so slow spells of a shared machine hit every size), and
checks that the maps do not depend on the batch size (the same samples, only grouped
differently).

    python -m benchmarks.gradient_batch_bench [--study reports/benchmark/study] [--sizes 64 50 32 16 8]

Results are recorded in benchmarks/BENCHMARKS.md; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_worker import load_study
from common import registry
from experiments.layout import ArmPaths

ARM = "pytorch"  # the arm measured (a key of common.registry.ARMS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, default=Path("reports/benchmark/study"), help="a finished study's folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 50, 32, 16, 8])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    spec = registry.arm_spec(ARM)
    model_path = ArmPaths.of(args.study, spec).model
    if not (args.study / "config.yaml").is_file() or not model_path.is_file():
        print(
            f"error: {args.study} holds no finished {spec.framework} study (config.yaml and {model_path.name}); "
            f"run `make benchmark ARGS='--only {spec.key}'` first, or pass --study",
            file=sys.stderr,
        )
        return 2
    cfg, data, images, background, arm, _ = load_study(args.study, spec)
    nsamples = cfg.explain.nsamples
    passes = registry.METHODS["gradient"].passes(len(images), len(data.classes), len(background), nsamples)

    seconds: dict[int, list[float]] = {b: [] for b in args.sizes}
    reference, max_diff = None, {}
    for _ in range(args.rounds):
        for b in args.sizes:
            arm.explain_batch_size = b
            t0 = time.perf_counter()
            e = arm.explain(images, background, "gradient", nsamples=nsamples, seed=cfg.seed, output=cfg.explain.output)
            seconds[b].append(time.perf_counter() - t0)
            if reference is None:
                reference = e.attributions
            max_diff[b] = float(np.max(np.abs(e.attributions - reference)))
            print(f"batch {b:4d}: {seconds[b][-1]:6.2f} s", flush=True)
    result = {
        "study": str(args.study),
        "passes": passes,
        "nsamples": nsamples,
        "image_size": data.image_size,
        "sizes": {
            b: {
                "seconds": [round(s, 2) for s in v],
                "median_s": round(float(np.median(v)), 2),
                "passes_per_s": round(passes / float(np.median(v)), 1),
                "max_abs_diff": max_diff[b],
            }
            for b, v in seconds.items()
        },
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
