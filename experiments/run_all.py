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
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python experiments/run_all.py): the checkout's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only the standard library, the registry and the flags (standard library only) before the
# arguments are parsed, so --help works before the dependencies are installed.
from experiments.flags import add_study_flags, config_overrides  # noqa: E402

SETUP_HINT = (
    "run `make study` (it creates .venv with every dependency), or: python3 -m venv .venv && "
    ".venv/bin/pip install -r requirements.txt && .venv/bin/python experiments/run_all.py"
)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
log = logging.getLogger("study")


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory where it lies below it (shorter in --help)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        help="data folder: train/ + test/ (or val/) with one folder per class, or class "
        "folders only (default: scikit-learn's bundled digits set)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help=f"YAML config file (default: {_shown(DEFAULT_CONFIG)}); flags override it",
    )
    p.add_argument("--out", help="output folder (default: reports/<data set name>)")
    p.add_argument(
        "--seed",
        type=int,
        help="a single-seed study's seed: of the split, the explained images, training and explainers (default: 0)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="training seeds of a seed sweep: each arm is trained and explained once per seed, all on one split "
        "(default: the config's seeds, else the single --seed)",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        help="seed of the split and of the explained and background images, shared by every training seed "
        "(default: the config's split_seed, else --seed)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="units (arm x seed) run at once on a local Dask cluster of this many worker processes "
        "(default: 1, one after another without Dask)",
    )
    p.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler (e.g. tcp://host:8786) whose workers run the units and see "
        "the same --out folder (default: none; --jobs decides)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="intra-op threads (torch, TensorFlow, BLAS) per unit (default: the libraries' own with --jobs 1, "
        "else the cores of the machine // the workers on it)",
    )
    add_study_flags(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the data, write split.csv and skipped.csv, print the counts, the skipped files and the planned "
        "explainer passes, then stop",
    )
    p.add_argument("--force", action="store_true", help="rerun every stage even when its inputs are unchanged")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The study's modules import its dependencies: here, after the arguments, so --help and this
    # one-line message work in an interpreter that lacks them.
    try:
        from common.errors import StudyError
        from experiments.units import UnitsFailed
    except ModuleNotFoundError as exc:
        missing = f"error: {sys.executable} lacks the study's dependencies (no module {exc.name!r})"
        print(f"{missing}; {SETUP_HINT}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        out = _dry_run(args) if args.dry_run else _run(args)
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


def _config(args: argparse.Namespace):
    """The study's config: the YAML file (or the default one) with the flags on top."""
    from common.config import load_config

    overrides = {"data.root": args.data, "out": args.out, "seed": args.seed, "seeds": args.seeds}
    return load_config(
        args.config or DEFAULT_CONFIG, {**overrides, "split_seed": args.split_seed, **config_overrides(args)}
    )


def _execution(args: argparse.Namespace):
    """How the units run (``--jobs``, ``--scheduler``, ``--threads``).

    Raises:
        ConfigError: a combination no run could use.
    """
    from common.errors import ConfigError
    from experiments.units import Execution

    execution = Execution(jobs=args.jobs, scheduler=args.scheduler, threads=args.threads)
    if execution.problems():
        raise ConfigError("; ".join(execution.problems()))
    return execution


def _run(args: argparse.Namespace) -> Path:
    """The whole study; its output folder."""
    from experiments.pipeline import run_study

    cfg, execution = _config(args), _execution(args)
    return run_study(cfg, force=args.force, execution=execution).out


def _dry_run(args: argparse.Namespace) -> Path:
    """The data stage alone, then the counts, the skipped files and the planned work on stdout."""
    from common.data.dataset import format_counts_table
    from experiments.budget import allocate
    from experiments.data_stage import data_stage
    from experiments.layout import make_selection
    from experiments.plan import format_plan, planned_work

    cfg = _config(args)
    _execution(args)  # checked as a run would
    out, data, _ = data_stage(cfg)
    print(f"data set '{data.manifest.name}' ({data.manifest.layout}), {data.image_size}x{data.image_size} px")
    print(format_counts_table(data))
    print(f"skipped files: {len(data.manifest.skipped)}")
    for s in data.manifest.skipped:
        print(f"  {s.path}: {s.reason}")
    print(f"split written to {out / 'split.csv'}, the skipped files and why to {out / 'skipped.csv'}")
    selection = make_selection(cfg, data)
    n_explain, n_background = len(selection.explain_idx), len(selection.background_idx)
    plans = allocate(cfg, n_explain, len(data.classes), data.image_size) if cfg.assess.enabled else None
    print(format_plan(planned_work(cfg, n_explain, len(data.classes), n_background, plans), cfg.explain.classes))
    return out


if __name__ == "__main__":
    sys.exit(main())
