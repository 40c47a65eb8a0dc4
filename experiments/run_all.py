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

# Only the standard library and the registry (itself standard library only) before the
# arguments are parsed, so --help works before the dependencies are installed.
from common import registry  # noqa: E402

SETUP_HINT = (
    "run `make study` (it creates .venv with every dependency), or: python3 -m venv .venv && "
    ".venv/bin/pip install -r requirements.txt && .venv/bin/python experiments/run_all.py"
)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
log = logging.getLogger("study")


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory where it lies below it (shorter in --help)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def add_study_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override the study's config, shared by the study's and the benchmark's
    command lines; one ``--epochs-<arm>`` per registered arm. :func:`config_overrides` reads them."""
    p.add_argument(
        "--image-size",
        type=int,
        help="square image side in pixels (default: from the config; 224 for folders, 32 for digits)",
    )
    for spec in registry.ARMS.values():
        p.add_argument(
            f"--epochs-{spec.key}",
            type=int,
            dest=f"epochs_{spec.key}",
            help=f"training epochs of the {spec.title} (default: from the config)",
        )
    p.add_argument("--n-explain", type=int, help="test images explained, stratified (default: 2 per class)")
    p.add_argument("--n-background", type=int, help="training images in the SHAP background (default: from the config)")
    p.add_argument("--nsamples", type=int, help="Gradient SHAP samples per image (default: from the config)")
    p.add_argument(
        "--classes",
        choices=list(registry.CLASS_SELECTIONS),
        help="which classes each image's maps explain: the predicted class, also the true one where the "
        "prediction is wrong, or every class (default: from the config, predicted+true)",
    )
    p.add_argument(
        "--keras-weights",
        help="Keras backbone weights: imagenet, none, or a path to a no-top .h5 file (default: from the config)",
    )
    p.add_argument(
        "--cache-dir",
        help="cache of decoded images and features (default: $STUDY_CACHE_DIR, else the user's cache folder, "
        "e.g. ~/.cache/shap-framework-study)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="figures that match across machines: TensorFlow's oneDNN off and op determinism on "
        "(slower; default: off, see README)",
    )
    p.add_argument("--only", choices=list(registry.ARMS), help="run one arm only (default: every arm)")
    p.add_argument(
        "--no-assess",
        dest="assess",
        action="store_false",
        default=None,
        help="skip the assess stage (deletion/insertion, sanity checks, cross-checks) and its report section",
    )
    p.add_argument(
        "--assess-steps", type=int, help="deletion/insertion steps of the assess stage (default: from the config)"
    )
    p.add_argument(
        "--n-sanity",
        type=int,
        help="explained images for the randomisation check, noise floor and cross-check (default: from the config)",
    )


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The dotted config overrides of :func:`add_study_flags`' flags (None: not given)."""
    return {
        "data.image_size": args.image_size,
        **{f"{key}.epochs": getattr(args, f"epochs_{key}") for key in registry.ARMS},
        "explain.n_explain": args.n_explain,
        "explain.n_background": args.n_background,
        "explain.nsamples": args.nsamples,
        "explain.classes": args.classes,
        "keras.weights": args.keras_weights,
        "data.cache_dir": args.cache_dir,
        "deterministic": args.deterministic,
        "only": args.only,
        "assess.enabled": args.assess,
        "assess.steps": args.assess_steps,
        "assess.n_sanity": args.n_sanity,
    }


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
        help="validate the data, write split.csv, print the counts and the planned explainer passes, then stop",
    )
    p.add_argument("--force", action="store_true", help="rerun every stage even when its inputs are unchanged")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from common.config import load_config
        from common.data import format_counts_table
        from common.errors import ConfigError, StudyError
        from experiments.pipeline import data_stage, run_study
        from experiments.units import Execution, UnitsFailed
    except ModuleNotFoundError as exc:
        missing = f"error: {sys.executable} lacks the study's dependencies (no module {exc.name!r})"
        print(f"{missing}; {SETUP_HINT}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(
            args.config or DEFAULT_CONFIG,
            {
                "data.root": args.data,
                "out": args.out,
                "seed": args.seed,
                "seeds": args.seeds,
                "split_seed": args.split_seed,
                **config_overrides(args),
            },
        )
        execution = Execution(jobs=args.jobs, scheduler=args.scheduler, threads=args.threads)
        if execution.problems():
            raise ConfigError("; ".join(execution.problems()))
        t0 = time.perf_counter()
        if args.dry_run:
            out, data, _ = data_stage(cfg)
        else:
            out = run_study(cfg, force=args.force, execution=execution).out
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
    if args.dry_run:
        print(f"data set '{data.manifest.name}' ({data.manifest.layout}), {data.image_size}x{data.image_size} px")
        print(format_counts_table(data))
        skipped = data.manifest.skipped
        print(f"skipped files: {len(skipped)}")
        for s in skipped:
            print(f"  {s.path}: {s.reason}")
        print(f"split written to {out / 'split.csv'}")
        from experiments.pipeline import make_selection
        from experiments.plan import format_plan, planned_work

        selection = make_selection(cfg, data)
        n_explain, n_background = len(selection.explain_idx), len(selection.background_idx)
        print(format_plan(planned_work(cfg, n_explain, len(data.classes), n_background), cfg.explain.classes))
    else:
        print(
            f"study finished in {time.perf_counter() - t0:.0f} s; "
            f"reports: {out / 'report.md'} and {out / 'report.html'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
