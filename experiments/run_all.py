"""Run the framework comparison study: train both arms on the same split, explain the
same test images with Deep SHAP and Gradient SHAP in both frameworks, and write
side-by-side accuracy and attribution reports.

With no arguments it runs the quick default study on scikit-learn's bundled digits set
(offline; its measured time is in benchmarks/BENCHMARKS.md). Example on the insects data:

    python experiments/run_all.py --data ../shared/datasets/insects --config experiments/configs/insects.yaml
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
    p.add_argument("--seed", type=int, help="seed for the split, selections, training and explainers (default: 0)")
    add_study_flags(p)
    p.add_argument(
        "--dry-run", action="store_true", help="validate the data, write split.csv, print the counts, and stop"
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
        from common.errors import ArmFailedError, StudyError
        from experiments.pipeline import data_stage, run_study
    except ModuleNotFoundError as exc:
        missing = f"error: {sys.executable} lacks the study's dependencies (no module {exc.name!r})"
        print(f"{missing}; {SETUP_HINT}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(
            args.config or DEFAULT_CONFIG,
            {"data.root": args.data, "out": args.out, "seed": args.seed, **config_overrides(args)},
        )
        t0 = time.perf_counter()
        if args.dry_run:
            out, data, _ = data_stage(cfg)
        else:
            out = run_study(cfg, force=args.force).out
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ArmFailedError) else 2
    except OSError as exc:  # a user-given path (--out, --data, --config, --cache-dir) that cannot be used
        if exc.filename is None:
            raise
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"data set '{data.manifest.name}' ({data.manifest.layout}), {data.image_size}x{data.image_size} px")
        print(format_counts_table(data))
        skipped = data.manifest.skipped
        print(f"skipped files: {len(skipped)}")
        for s in skipped:
            print(f"  {s.path}: {s.reason}")
        print(f"split written to {out / 'split.csv'}")
    else:
        print(
            f"study finished in {time.perf_counter() - t0:.0f} s; "
            f"reports: {out / 'report.md'} and {out / 'report.html'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
