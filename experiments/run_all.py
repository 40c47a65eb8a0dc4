"""Run the framework comparison study: train both arms on the same split, explain the
same test images with Deep SHAP and Gradient SHAP in both frameworks, and write
side-by-side accuracy and attribution reports.

With no arguments it runs the quick default study on scikit-learn's bundled digits set
(offline; its measured time is in benchmarks/BENCHMARKS.md). Example on the insects data:

    python experiments/run_all.py --data ../shared/datasets/insects --config experiments/configs/insects.yaml

A seed sweep trains and explains every arm once per training seed on one split, here two
seeds at a time on a local Dask cluster (README: "Seed sweeps on a cluster"):

    python experiments/run_all.py --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python experiments/run_all.py): the checkout's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only the standard library, the registry and the flags (standard library only) before the
# arguments are parsed, so --help works before the dependencies are installed.
from experiments.flags import DEFAULT_CONFIG, study_parser  # noqa: E402

SETUP_HINT = (
    "run `make study` (it creates .venv with every dependency), or: python3 -m venv .venv && "
    ".venv/bin/pip install -r requirements.txt && .venv/bin/python experiments/run_all.py"
)
log = logging.getLogger("study")


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory where it lies below it (shorter in --help)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return study_parser(__doc__, _shown(DEFAULT_CONFIG)).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line: parse the flags, run the study through :func:`experiments.run_study`,
    and answer a user's mistake with one line and exit status 2 (an arm that crashed: 1)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    # The study's modules import its dependencies: here, after the arguments, so --help and this
    # one-line message work in an interpreter that lacks them.
    try:
        from common.errors import StudyError
        from experiments.api import run_study
        from experiments.units import UnitsFailed
    except ModuleNotFoundError as exc:
        missing = f"error: {sys.executable} lacks the study's dependencies (no module {exc.name!r})"
        print(f"{missing}; {SETUP_HINT}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if k not in ("data", "config", "out")}
    try:
        out = run_study(args.data, args.config, args.out, **settings).out
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a user-given path (--out, --data, --config, --cache-dir) that cannot be used
        if exc.filename is None:
            raise
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    except UnitsFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.user_mistake else 1
    if not args.dry_run:
        elapsed = time.perf_counter() - t0
        print(f"study finished in {elapsed:.0f} s; reports: {out / 'report.md'} and {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
