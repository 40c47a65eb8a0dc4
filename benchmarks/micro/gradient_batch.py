"""Micro-benchmark behind the "Gradient SHAP batch size" lever: the PyTorch arm's
Gradient SHAP with different ``batch_size`` values (samples per forward/backward pass).

Loads the trained CNN of a finished insects study (the benchmark's ``OUT/study``),
explains the study's images against its background with each batch size in turn,
``--rounds`` times round-robin (so slow spells of a shared machine hit every size), and
checks that the maps do not depend on the batch size (the same samples, only grouped
differently).

    python -m benchmarks.micro.gradient_batch [--study reports/benchmark/study] [--sizes 64 50 32 16 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.efficiency import load_study
from benchmarks.measure import timed
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
    s = load_study(args.study, spec)
    nsamples = s.cfg.explain.nsamples
    passes = registry.METHODS["gradient"].passes(len(s.images), len(s.data.classes), len(s.background), nsamples)
    kwargs = {"nsamples": nsamples, "seed": s.cfg.seed, "output": s.cfg.explain.output}
    seconds: dict[int, list[float]] = {b: [] for b in args.sizes}
    reference, max_diff = None, {}
    for _ in range(args.rounds):
        for b in args.sizes:
            s.arm.explain_batch_size = b
            e, took = timed(s.arm.explain, s.images, s.background, "gradient", **kwargs)
            seconds[b].append(took)
            reference = e.attributions if reference is None else reference
            max_diff[b] = float(np.max(np.abs(e.attributions - reference)))
            print(f"batch {b:4d}: {took:6.2f} s", flush=True)
    medians = {b: float(np.median(v)) for b, v in seconds.items()}
    sizes = {
        b: {
            "seconds": [round(x, 2) for x in v],
            "median_s": round(medians[b], 2),
            "passes_per_s": round(passes / medians[b], 1),
            "max_abs_diff": max_diff[b],
        }
        for b, v in seconds.items()
    }
    print(
        json.dumps(
            {
                "study": str(args.study),
                "passes": passes,
                "nsamples": nsamples,
                "image_size": s.data.image_size,
                "sizes": sizes,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
