"""The benchmark's framework-specific measurements, in a process of its own (one framework).

Started by ``benchmarks.benchmark`` as
``python -m benchmarks.bench_worker --study OUT/study --arm KEY --result R.json``,
like the study's ``arm_worker``: it reads the study's resolved ``config.yaml``, loads the
trained model with ``<Arm>.load`` and, in this one process:

1. measures the raw forward+backward rate of the explained (logits) model: a batch of
   background-like images (the background, topped up with the explained images)
   through the model and the gradient of one class's summed logits w.r.t. the input —
   PyTorch autograd, or ``tf.GradientTape`` inside a ``tf.function`` for Keras — at the
   batch size each explainer runs its passes in (Deep SHAP: 2 x background; Gradient
   SHAP: the arm's explain batch size, at most ``nsamples``);
2. re-runs the arm's ``explain`` on the study's explained images and background (same
   selection, seed, nsamples and output) and times it; the first call is what the study
   paid (Keras builds its explainer and TensorFlow graphs then), later calls
   (``--explain-repeats``) reuse what the arm caches;
3. counts the passes each explainer really makes (``common.registry.MethodSpec.passes``) and
   writes rates and efficiencies.
"""

from __future__ import annotations

import argparse
import copy
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import keras_impl  # noqa: F401  (TensorFlow's environment, before anything imports it)
from common import registry
from common.arm import Arm
from common.config import StudyConfig, load_config
from common.explanation import Explanation
from common.io import write_json_atomic
from common.seeding import seed_everything
from experiments.layout import ArmPaths, make_selection, prepare_data

log = logging.getLogger("bench_worker")


def background_like_batch(background: np.ndarray, images: np.ndarray, size: int) -> np.ndarray:
    """``size`` uint8 images: the background rows, then the explained images, repeated as needed."""
    pool = np.concatenate([background, images])
    return pool[np.arange(size) % len(pool)]


def timed_rate(
    step: Callable[[int], Any], batch_size: int, n_classes: int, seconds: float, min_reps: int = 3
) -> dict[str, Any]:
    """Images per second of ``step(class_index)`` on one batch: one warm-up call, then at least
    ``min_reps`` calls and ``seconds`` of them; the rate is images over their total time."""
    t0 = time.perf_counter()
    step(0)
    warmup = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < min_reps or sum(times) < seconds:
        t0 = time.perf_counter()
        step(len(times) % n_classes)
        times.append(time.perf_counter() - t0)
    return {
        "batch_size": batch_size,
        "images_per_second": batch_size * len(times) / sum(times),
        "best_images_per_second": batch_size / min(times),
        "reps": len(times),
        "seconds": sum(times),
        "warmup_seconds": warmup,
    }


def pytorch_step(arm: Arm, batch: np.ndarray) -> Callable[[int], Any]:
    """One forward of the logits CNN and the input gradient of one class's summed logits (autograd)."""
    import torch

    from pytorch_impl.model import as_input, images_to_tensor

    model = copy.deepcopy(arm.model).float().eval().requires_grad_(False)  # as the arm's explainers run it
    x = as_input(images_to_tensor(batch, next(model.parameters()).device))  # (B, C, H, W) raw pixels

    def step(k: int):
        xi = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xi)[:, k].sum(), xi)
        return grad.cpu().numpy()

    return step


def keras_step(arm: Arm, batch: np.ndarray) -> Callable[[int], Any]:
    """One forward of the pixel → logits model and the input gradient of one class's summed
    logits (``tf.GradientTape`` in a ``tf.function`` traced once)."""
    import tensorflow as tf

    from keras_impl import model as km

    logits = km.logits_model(arm.model)  # the model the arm's explainers see

    @tf.function(
        input_signature=[tf.TensorSpec((None, *logits.input_shape[1:]), tf.float32), tf.TensorSpec((), tf.int32)]
    )
    def forward_backward(x, k):
        with tf.GradientTape() as tape:
            tape.watch(x)
            s = tf.reduce_sum(tf.gather(logits(x, training=False), k, axis=1))
        return tape.gradient(s, x)

    x = tf.constant(batch.astype(np.float32))  # (B, H, W, C) raw pixels
    return lambda k: forward_backward(x, tf.constant(k, tf.int32)).numpy()


def torch_threads() -> dict[str, Any]:
    import torch

    return {"torch_num_threads": torch.get_num_threads(), "torch_num_interop_threads": torch.get_num_interop_threads()}


def tensorflow_threads() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 = TensorFlow picks (all cores)",
    }


# Per arm key: its raw forward+backward step and the threads its framework uses.
STEPS: dict[str, Callable[[Arm, np.ndarray], Callable[[int], Any]]] = {"pytorch": pytorch_step, "keras": keras_step}
THREADS: dict[str, Callable[[], dict[str, Any]]] = {"pytorch": torch_threads, "keras": tensorflow_threads}


class StudyInputs(NamedTuple):
    """What a finished study explained, and its trained arm."""

    cfg: StudyConfig
    data: Any  # experiments.pipeline's StudyData
    images: np.ndarray  # the explained test images, uint8 (N, H, W, C)
    background: np.ndarray  # the background training images, uint8 (B, H, W, C)
    arm: Arm
    load_seconds: float  # loading the arm's model


def load_study(study: Path, spec: registry.ArmSpec) -> StudyInputs:
    """The study's config, data, explained images, background and the trained arm of ``spec``.

    Raises:
        RuntimeError: if the selection made now differs from the one the study saved.
    """
    cfg = load_config(study / "config.yaml")
    data = prepare_data(cfg)
    selection = make_selection(cfg, data)
    with np.load(study / "data" / "selection.npz") as saved:
        if not (
            np.array_equal(saved["explain_idx"], selection.explain_idx)
            and np.array_equal(saved["background_idx"], selection.background_idx)
        ):
            raise RuntimeError("the explained images or background differ from the study's; rerun the study")
    x_test, _ = data.arrays("test")
    x_train, _ = data.arrays("train")
    t0 = time.perf_counter()
    arm = spec.load_arm_class().load(ArmPaths.of(study, spec).model, cfg)
    return StudyInputs(
        cfg, data, x_test[selection.explain_idx], x_train[selection.background_idx], arm, time.perf_counter() - t0
    )


def raw_rates(
    arm: Arm,
    cfg: StudyConfig,
    images: np.ndarray,
    background: np.ndarray,
    batch_sizes: dict[str, int],
    raw_seconds: float,
    min_reps: int,
) -> dict[str, Any]:
    """The raw forward+backward rate at each method's batch size (one measurement per distinct size)."""
    make_step = STEPS[arm.spec.key]
    raw: dict[str, Any] = {}
    for method in cfg.explain.methods:
        size = batch_sizes[method]
        same = next((r for r in raw.values() if r["batch_size"] == size), None)
        if same is not None:  # same batch size: one measurement serves both
            raw[method] = same
            continue
        log.info("%s: raw forward+backward rate at batch %d", arm.spec.title, size)
        raw[method] = timed_rate(
            make_step(arm, background_like_batch(background, images, size)), size, arm.n_classes, raw_seconds, min_reps
        )
    return raw


def pass_formula(method: str, n_maps: int, b: int, nsamples: int) -> str:
    """How :meth:`common.registry.MethodSpec.passes` counted, with the numbers, in words."""
    if registry.METHODS[method].sampled:
        return f"{n_maps} maps (image x class) x {nsamples} samples"
    return f"{n_maps} maps (image x class) x 2 x {b} background"


def time_explainer(
    arm: Arm,
    cfg: StudyConfig,
    images: np.ndarray,
    background: np.ndarray,
    method: str,
    repeats: int,
    saved: Path,
    classes: np.ndarray | None,
) -> tuple[list[float], float | None]:
    """Seconds of ``repeats`` calls of the arm's explain (of the study's explained
    ``classes``), and the max |difference| of the first call's maps from the study's saved
    ones (None when the study saved none)."""
    runs, max_diff = [], None
    for _ in range(repeats):
        seed_everything(cfg.seed)
        t0 = time.perf_counter()
        e = arm.explain(
            images,
            background,
            method,
            nsamples=cfg.explain.nsamples,
            seed=cfg.seed,
            output=cfg.explain.output,
            classes=classes,
        )
        runs.append(time.perf_counter() - t0)
        if saved.exists() and max_diff is None:
            max_diff = float(np.max(np.abs(e.attributions.astype(np.float64) - Explanation.load(saved).attributions)))
    return runs, max_diff


def measure(
    study: Path, spec: registry.ArmSpec, raw_seconds: float, explain_repeats: int, min_reps: int = 3
) -> dict[str, Any]:
    """Raw rates, explainer rates and efficiencies of the arm ``spec`` of the study in ``study``."""
    cfg, data, images, background, arm, load_seconds = load_study(study, spec)
    paths = ArmPaths.of(study, spec)
    n, b, k = len(images), len(background), len(data.classes)
    nsamples = cfg.explain.nsamples
    batch_sizes = {
        m: min(arm.explain_batch_size, nsamples) if registry.METHODS[m].sampled else 2 * b for m in cfg.explain.methods
    }
    raw = raw_rates(arm, cfg, images, background, batch_sizes, raw_seconds, min_reps)

    explainers: dict[str, Any] = {}
    for method in cfg.explain.methods:
        saved = paths.attributions(method)
        study = Explanation.load(saved) if saved.exists() else None
        study_seconds = study.seconds if study else None
        classes = study.classes if study else None  # what the study explained (None: every class)
        n_maps = study.n_maps if study else n * k
        passes = registry.METHODS[method].passes(n_maps, 1, b, nsamples)
        log.info("%s: %s explainer, %d passes", spec.title, method, passes)
        runs, max_diff = time_explainer(arm, cfg, images, background, method, explain_repeats, saved, classes)
        raw_rate = raw[method]["images_per_second"]
        entry: dict[str, Any] = {
            "maps": n_maps,
            "passes": passes,
            "pass_formula": pass_formula(method, n_maps, b, nsamples),
            "pass_batch_size": batch_sizes[method],
            "seconds": runs[0],
            "seconds_runs": runs,
            "images_per_second": passes / runs[0],
            "raw_images_per_second": raw_rate,
            "efficiency": passes / runs[0] / raw_rate,
            "study_seconds": study_seconds,
            "efficiency_study_time": passes / study_seconds / raw_rate if study_seconds else None,
            "max_abs_diff_vs_study": max_diff,
        }
        if len(runs) > 1:
            entry["seconds_warm"] = min(runs[1:])
            entry["efficiency_warm"] = passes / entry["seconds_warm"] / raw_rate
        explainers[method] = entry
    return {
        "framework": spec.framework,
        "arm": spec.name,
        "model_load_seconds": load_seconds,
        "n_images": n,
        "n_classes": k,
        "n_background": b,
        "nsamples": nsamples,
        "output": cfg.explain.output,
        "explain_batch_size": arm.explain_batch_size,
        "image_size": data.image_size,
        "threads": THREADS[spec.key](),
        "raw": raw,
        "explainers": explainers,
        "explainer_time": "re-run of the arm's explain in this process (first call: what the study paid)",
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, type=Path, help="a finished study's output folder")
    p.add_argument("--arm", required=True, choices=list(registry.ARMS), help="which arm to measure")
    p.add_argument("--result", required=True, type=Path, help="JSON file to write the measurements to")
    p.add_argument("--raw-seconds", type=float, default=10.0, help="least seconds of timed raw passes (default: 10)")
    p.add_argument(
        "--explain-repeats", type=int, default=2, help="explainer calls per method; the first is cold (default: 2)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    result = measure(args.study, registry.arm_spec(args.arm), args.raw_seconds, max(1, args.explain_repeats))
    write_json_atomic(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
