"""Micro-benchmark behind the "Gradient SHAP batch size" lever: the PyTorch arm's
Gradient SHAP with different ``batch_size`` values (samples per forward/backward pass).

Loads the trained CNN of a finished insects study (the benchmark's ``OUT/study``),
explains the study's images against its background with each batch size in turn,
``--rounds`` times round-robin (so slow spells of a shared machine hit every size), and
checks that the maps do not depend on the batch size (the same samples, only grouped
differently).

    python experiments/gradient_batch_bench.py [--study reports/benchmark/study] [--sizes 64 50 32 16 8]

Results are recorded in experiments/BENCHMARKS.md; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from experiments.bench_worker import gradient_passes, load_study  # noqa: E402
from experiments.pipeline import MODEL_FILENAMES, arm_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, default=Path("reports/benchmark/study"), help="a finished study's folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 50, 32, 16, 8])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    model_path = arm_dir(args.study, "pytorch") / MODEL_FILENAMES["pytorch"]
    if not (args.study / "config.yaml").is_file() or not model_path.is_file():
        print(f"error: {args.study} holds no finished PyTorch study (config.yaml and {model_path.name}); "
              "run `make benchmark ARGS='--only pytorch'` first, or pass --study", file=sys.stderr)
        return 2
    cfg, data, images, background, arm, _ = load_study(args.study, "pytorch")
    nsamples = cfg.explain.nsamples
    passes = gradient_passes(len(images), len(data.classes), nsamples)

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
    result = {"study": str(args.study), "passes": passes, "nsamples": nsamples, "image_size": data.image_size,
              "sizes": {b: {"seconds": [round(s, 2) for s in v], "median_s": round(float(np.median(v)), 2),
                            "passes_per_s": round(passes / float(np.median(v)), 1), "max_abs_diff": max_diff[b]}
                        for b, v in seconds.items()}}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
