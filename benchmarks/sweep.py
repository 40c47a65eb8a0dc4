"""A seed sweep run sequentially and with ``--jobs N``: the same study, two wall times, one ratio.

Runs ``experiments/run_all.py --seeds ...`` twice in fresh processes, into two fresh output
folders (``OUT/sequential`` and ``OUT/jobs-N``): first with ``--jobs 1`` (no Dask), then
with ``--jobs N`` (a local Dask cluster of N workers). Threads: by default the sequential
run keeps the libraries' own thread counts (every core) and each parallel unit gets
cores // N; ``--threads T`` gives every unit of both runs T. A dry run first fills a
decoded-image cache; each timed run starts from its own copy of it (``STUDY_CACHE_DIR``),
so neither decodes and neither finds the other's Keras backbone features.

It also compares the two runs' figures (metrics.json without timings and execution). They
are the same when both runs give every unit the same threads; with different thread counts
training sums floats in another order and the figures differ slightly, as they do between
any two thread settings. It writes ``OUT/sweep_bench.json`` and prints a Markdown row for
``benchmarks/BENCHMARKS.md`` ("7. Seed sweeps in parallel").

    python -m benchmarks.sweep --data ../shared/datasets/insects \\
        --config experiments/configs/insects.yaml --only pytorch --seeds 0 1 2 --jobs 2
    python -m benchmarks.sweep --seeds 0 1 2 --jobs 2          # the default study (digits, both arms)

Other run_all.py arguments go after ``--`` unchanged (e.g. ``-- --epochs-pytorch 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common.io import write_json_atomic
from experiments.units import THREAD_VARIABLES, available_cores

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "experiments" / "run_all.py"


def _without_timings(obj):
    """metrics.json without wall times, stage records and how the run was executed."""
    if isinstance(obj, dict):
        return {
            k: _without_timings(v)
            for k, v in obj.items()
            if not (k.endswith("seconds") or k in {"stages", "execution", "out", "feature_cache"})
        }
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _run(cmd: list[str], cache: Path) -> float:
    print(f"$ STUDY_CACHE_DIR={cache}", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "STUDY_CACHE_DIR": str(cache)})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="data folder (default: the bundled digits set, as run_all.py)")
    p.add_argument("--config", help="YAML config (default: run_all.py's)")
    p.add_argument("--only", help="one arm only (default: every arm)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--jobs", type=int, default=2, help="local Dask workers of the parallel run (default: 2)")
    p.add_argument("--threads", type=int, help="intra-op threads of every unit of both runs (default: see above)")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "sweep-bench", help="(default: reports/sweep-bench)")
    p.add_argument("rest", nargs="*", help="more run_all.py arguments, after --")
    args = p.parse_args(argv)

    common = [sys.executable, str(RUN_ALL), "--seeds", *map(str, args.seeds), "-q"]
    for flag, value in (("--data", args.data), ("--config", args.config), ("--only", args.only)):
        if value:
            common += [flag, value]
    if args.threads:
        common += ["--threads", str(args.threads)]
    common += args.rest
    args.out.mkdir(parents=True, exist_ok=True)
    warm = args.out / "cache"
    _run([*common, "--out", str(args.out / "dry-run"), "--dry-run"], warm)  # decode once

    runs = {}
    for label, jobs in (("sequential", 1), (f"jobs-{args.jobs}", args.jobs)):
        out, cache = args.out / label, args.out / f"cache-{label}"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(warm, cache, ignore=shutil.ignore_patterns("keras_features"))  # decoded pixels only
        seconds = _run([*common, "--out", str(out), "--jobs", str(jobs), "--force"], cache)
        metrics = json.loads((out / "metrics.json").read_text())
        runs[label] = {"jobs": jobs, "seconds": seconds, "execution": metrics["execution"], "metrics": metrics}
    sequential, parallel = runs["sequential"], runs[f"jobs-{args.jobs}"]
    same = _without_timings(sequential["metrics"]) == _without_timings(parallel["metrics"])
    ratio = sequential["seconds"] / parallel["seconds"]
    same_threads = args.threads is not None
    result = {
        "command": shlex.join([sys.executable, "-m", "benchmarks.sweep", *(argv or sys.argv[1:])]),
        "machine": f"{available_cores()} cores, {platform.machine()}, {platform.system()} {platform.release()}",
        "seeds": args.seeds,
        "jobs": args.jobs,
        "sequential_seconds": sequential["seconds"],
        "parallel_seconds": parallel["seconds"],
        "speed_up": ratio,
        "same_figures": same,
        "same_threads": same_threads,
        "sequential_threads": sequential["execution"]["threads_rule"],
        "parallel_threads": sorted({u["threads"] for u in parallel["execution"]["units"].values()} - {None}),
        "thread_variables": list(THREAD_VARIABLES),
        "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
    }
    write_json_atomic(args.out / "sweep_bench.json", result)
    threads = ", ".join(map(str, result["parallel_threads"]))
    print(
        f"| {', '.join(map(str, args.seeds))} | {sequential['seconds']:.0f} ({result['sequential_threads']}) "
        f"| {parallel['seconds']:.0f} (--jobs {args.jobs}, {threads} thread(s) per unit) | **{ratio:.2f}×** "
        f"| {'yes' if same else 'no (thread counts differ)' if not same_threads else 'NO'} |"
    )
    return 1 if same_threads and not same else 0  # the same threads must give the same figures


if __name__ == "__main__":
    sys.exit(main())
