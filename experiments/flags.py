"""The study's command-line flags: those that override its config, shared by the study's command
line (:mod:`experiments.run_all`) and the benchmark's, and the study's whole parser
(:func:`study_parser`), whose flags the Python API (:func:`experiments.run_study`) takes as
keyword arguments.

Only the standard library and the registry (itself standard library only), so ``--help`` works
before the study's dependencies are installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import registry

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


def add_study_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override the study's config, shared by the study's and the benchmark's
    command lines; one ``--epochs-<arm>`` per registered arm. :func:`config_overrides` reads them."""
    _add_data_flags(p)
    _add_arm_flags(p)
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
        help="Keras backbone weights (the PyTorch ResNet50's are the same, converted): imagenet, none, or a path "
        "to a no-top .h5 file (default: from the config, imagenet)",
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
    p.add_argument(
        "--only",
        choices=[s.key for s in registry.trained_arms()],
        help="run one arm only (default: every arm of the design)",
    )
    p.add_argument(
        "--no-assess",
        dest="assess",
        action="store_false",
        default=None,
        help="skip the assess stage (deletion/insertion, sanity checks, cross-checks) and its report section",
    )
    p.add_argument(
        "--assess-budget",
        type=float,
        help="what the assess stage may add beyond its base, as a share of the explain stages' cost (0.25: a "
        "quarter; default: from the config, 0.25); it buys sanity images, ceiling draws and random orders in turn",
    )
    p.add_argument(
        "--assess-steps", type=int, help="deletion/insertion steps of the assess stage (default: from the config, 16)"
    )
    p.add_argument(
        "--n-sanity",
        type=int,
        help="explained images of the sanity checks and the cross-check, whatever the budget (default: the "
        "budget's choice, up to all)",
    )


def study_parser(description: str | None, default_config: object) -> argparse.ArgumentParser:
    """The study's command line (``experiments/run_all.py``, ``shap-study``): every flag, with
    ``default_config`` named as the config file's default in ``--help``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        help="data folder: train/ + test/ (or val/) with one folder per class, or class "
        "folders only (default: scikit-learn's bundled digits set)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help=f"YAML config file (default: {default_config}); flags override it",
    )
    p.add_argument("--out", help="output folder (default: reports/<data set name>)")
    _add_seed_and_unit_flags(p)
    add_study_flags(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the data, write split.csv and skipped.csv, print the counts, the skipped files and the planned "
        "explainer passes, then stop",
    )
    p.add_argument("--force", action="store_true", help="rerun every stage even when its inputs are unchanged")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def _add_seed_and_unit_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the study's seeds and of how its units run (``--seed`` ... ``--threads``)."""
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


def _add_arm_flags(p: argparse.ArgumentParser) -> None:
    """Which arms run (the design, the framework check's twin) and each trained arm's epochs."""
    p.add_argument(
        "--design",
        choices=list(registry.DESIGNS),
        help="which arms the study runs: published (the PyTorch CNN and the Keras ResNet50) or factorial (each "
        "architecture in both frameworks: also the Keras CNN and the PyTorch ResNet50) (default: from the config, "
        "published)",
    )
    p.add_argument(
        "--no-framework-check",
        dest="framework_check",
        action="store_false",
        default=None,
        help='skip "Is it the framework?": the trained PyTorch CNN carried into Keras and explained there '
        "(default: on)",
    )
    for spec in registry.trained_arms():
        p.add_argument(
            f"--epochs-{spec.key.replace('_', '-')}",
            type=int,
            dest=f"epochs_{spec.key}",
            help=f"training epochs of the {spec.title} (default: from the config)",
        )


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the config's ``data`` section that a run may override: the image size and the pixel limit."""
    p.add_argument(
        "--image-size",
        type=int,
        help="square image side in pixels (default: from the config; 224 for folders, 32 for digits)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        metavar="N",
        help="images with more pixels (width x height, read from the file's header) are skipped and listed before "
        "they are decoded, so one file cannot exhaust memory; Pillow's own limit is set from it (default: from the "
        "config, 67108864 = 8192x8192: full-frame cameras' 45-61 Mpx photos fit, and one decoding process, one per "
        "core, needs at most about 512 MiB, at up to 8 bytes per pixel)",
    )


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The dotted config overrides of :func:`add_study_flags`' flags (None: not given)."""
    return {
        "data.image_size": args.image_size,
        "design": args.design,
        **{f"{spec.key}.epochs": getattr(args, f"epochs_{spec.key}") for spec in registry.trained_arms()},
        "explain.n_explain": args.n_explain,
        "explain.n_background": args.n_background,
        "explain.nsamples": args.nsamples,
        "explain.classes": args.classes,
        "keras.weights": args.keras_weights,
        "data.cache_dir": args.cache_dir,
        "data.max_image_pixels": args.max_image_pixels,
        "deterministic": args.deterministic,
        "only": args.only,
        "framework_check": args.framework_check,
        "assess.enabled": args.assess,
        "assess.budget": args.assess_budget,
        "assess.steps": args.assess_steps,
        "assess.n_sanity": args.n_sanity,
    }
