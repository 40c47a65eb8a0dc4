"""The command-line flags that override the study's config, shared by the study's command line
(:mod:`experiments.run_all`) and the benchmark's.

Only the standard library and the registry (itself standard library only), so ``--help`` works
before the study's dependencies are installed.
"""

from __future__ import annotations

import argparse

from common import registry


def add_study_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override the study's config, shared by the study's and the benchmark's
    command lines; one ``--epochs-<arm>`` per registered arm. :func:`config_overrides` reads them."""
    _add_data_flags(p)
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
        **{f"{key}.epochs": getattr(args, f"epochs_{key}") for key in registry.ARMS},
        "explain.n_explain": args.n_explain,
        "explain.n_background": args.n_background,
        "explain.nsamples": args.nsamples,
        "explain.classes": args.classes,
        "keras.weights": args.keras_weights,
        "data.cache_dir": args.cache_dir,
        "data.max_image_pixels": args.max_image_pixels,
        "deterministic": args.deterministic,
        "only": args.only,
        "assess.enabled": args.assess,
        "assess.budget": args.assess_budget,
        "assess.steps": args.assess_steps,
        "assess.n_sanity": args.n_sanity,
    }
