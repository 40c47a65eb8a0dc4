"""A seed sweep run sequentially and with ``--jobs N``: the same study, two wall times, one ratio.

``experiments/run_all.py --seeds ...`` runs twice, into ``OUT/sequential`` (``--jobs 1``, no Dask)
and ``OUT/jobs-N`` (a local Dask cluster of N workers), each from its own copy of the decoded-image
cache a dry run filled (neither decodes, neither finds the other's Keras features). Threads: the
sequential run keeps the libraries' own counts and each parallel unit gets cores // N, unless
``--threads T`` gives every unit of both runs T; then the figures (metrics.json without timings) must
be the same (exit status 1 if not; with different thread counts floats sum in another order). Writes
``OUT/sweep_bench.json`` and prints a Markdown row for ``benchmarks/BENCHMARKS.md`` (section 7).

    python -m benchmarks.sweep --data ../shared/datasets/insects \\
        --config experiments/configs/insects.yaml --only pytorch --seeds 0 1 2 --jobs 2
    python -m benchmarks.sweep --seeds 0 1 2 --jobs 2 -- --epochs-pytorch 1     # run_all.py flags after --
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

from benchmarks.measure import REPO_ROOT, run_all
from benchmarks.versus import differences
from common.io import read_json, write_json_atomic
from experiments.units import THREAD_VARIABLES, available_cores


def without_timings(path: tuple) -> bool:
    """metrics.json's wall times, stage records, how the run was executed and where its outputs went."""
    return str(path[-1]).endswith("seconds") or path[-1] in {"stages", "execution", "out", "feature_cache"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="data folder (default: the bundled digits set, as run_all.py)")
    p.add_argument("--config", help="YAML config (default: run_all.py's)")
    p.add_argument("--only", help="one arm only (default: every arm)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--jobs", type=int, default=2, help="local Dask workers of the parallel run (default: 2)")
    p.add_argument("--threads", type=int, help="intra-op threads of every unit of both runs (default: see above)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "sweep-bench", help="(default: %(default)s)")
    p.add_argument("rest", nargs="*", help="more run_all.py arguments, after --")
    args = p.parse_args(argv)
    flags = [(f, v) for f, v in (("--data", args.data), ("--config", args.config), ("--only", args.only)) if v]
    common = ["--seeds", *map(str, args.seeds), "-q", *(x for pair in flags for x in pair)]
    common += ["--threads", str(args.threads)] if args.threads else []
    common += args.rest
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_all([*common, "--out", str(out / "dry-run"), "--dry-run"], out / "cache")  # decode once

    runs = {}
    for label, jobs in (("sequential", 1), (f"jobs-{args.jobs}", args.jobs)):
        cache = out / f"cache-{label}"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(out / "cache", cache, ignore=shutil.ignore_patterns("keras_features"))  # decoded pixels only
        seconds = run_all([*common, "--out", str(out / label), "--jobs", str(jobs), "--force"], cache)
        metrics = read_json(out / label / "metrics.json")
        runs[label] = {"jobs": jobs, "seconds": seconds, "execution": metrics["execution"], "metrics": metrics}
    sequential, parallel = runs["sequential"], runs[f"jobs-{args.jobs}"]
    same = not differences(sequential["metrics"], parallel["metrics"], without_timings)
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
    write_json_atomic(out / "sweep_bench.json", result)
    threads = ", ".join(map(str, result["parallel_threads"]))
    print(
        f"| {', '.join(map(str, args.seeds))} | {sequential['seconds']:.0f} ({result['sequential_threads']}) "
        f"| {parallel['seconds']:.0f} (--jobs {args.jobs}, {threads} thread(s) per unit) | **{ratio:.2f}×** "
        f"| {'yes' if same else 'no (thread counts differ)' if not same_threads else 'NO'} |"
    )
    return 1 if same_threads and not same else 0  # the same threads must give the same figures


if __name__ == "__main__":
    sys.exit(main())
