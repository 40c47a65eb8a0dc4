"""The efficiency part's measurements of one arm, in a process of its own (:func:`run`, started by
:mod:`benchmarks.study` through :func:`benchmarks.measure.in_child`).

Like the study's arm process it reads a finished study's resolved ``config.yaml``, loads the trained
model with ``<Arm>.load`` and, in this one process:

1. measures the raw forward+backward rate of the explained (logits) model: a batch of
   background-like images through the model and the gradient of one class's summed logits w.r.t.
   the input (PyTorch autograd, or ``tf.GradientTape`` in a ``tf.function``), at the batch size each
   explainer runs its passes in (Deep SHAP: 2 x background; Gradient SHAP: the arm's explain batch
   size, at most ``nsamples``);
2. re-runs the arm's ``explain`` on the study's explained images and background and times it: the
   first call is what the study paid, later calls (``explain_repeats``) reuse what the arm caches;
3. counts the passes each explainer really makes (``common.registry.MethodSpec.passes``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import keras_impl  # noqa: F401  (TensorFlow's environment, before anything imports it)
from benchmarks.measure import call_seconds, peak_mb, timed
from common import registry
from common.arm import Arm
from common.config import StudyConfig, load_config
from common.data.dataset import StudyData
from common.explanation import Explanation
from common.machine import machine_info
from common.seeding import seed_everything
from experiments.layout import ArmPaths, make_selection, prepare_data

log = logging.getLogger("benchmark")


def background_like_batch(background: np.ndarray, images: np.ndarray, size: int) -> np.ndarray:
    """``size`` uint8 images: the background rows, then the explained images, repeated as needed."""
    pool = np.concatenate([background, images])
    return pool[np.arange(size) % len(pool)]


def timed_rate(step: Callable[[int], Any], batch_size: int, n_classes: int, seconds: float, min_reps: int = 3):
    """Images per second of ``step(class_index)`` on one batch: one warm-up call, then at least
    ``min_reps`` calls and ``seconds`` of them; the rate is images over their total time."""
    _, warmup = timed(step, 0)
    times: list[float] = []
    while len(times) < min_reps or sum(times) < seconds:
        times.append(timed(step, len(times) % n_classes)[1])
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
    signature = [tf.TensorSpec((None, *logits.input_shape[1:]), tf.float32), tf.TensorSpec((), tf.int32)]

    @tf.function(input_signature=signature)
    def forward_backward(x, k):
        with tf.GradientTape() as tape:
            tape.watch(x)
            s = tf.reduce_sum(tf.gather(logits(x, training=False), k, axis=1))
        return tape.gradient(s, x)

    x = tf.constant(batch.astype(np.float32))  # (B, H, W, C) raw pixels
    return lambda k: forward_backward(x, tf.constant(k, tf.int32)).numpy()


# Per arm key: its raw forward+backward step.
STEPS: dict[str, Callable[[Arm, np.ndarray], Callable[[int], Any]]] = {"pytorch": pytorch_step, "keras": keras_step}


class StudyInputs(NamedTuple):
    """What a finished study explained, and its trained arm."""

    cfg: StudyConfig
    data: StudyData
    images: np.ndarray  # the explained test images, uint8 (N, H, W, C)
    background: np.ndarray  # the background training images, uint8 (B, H, W, C)
    arm: Arm
    load_seconds: float  # loading the arm's model
    paths: ArmPaths  # where the study keeps the arm's artefacts


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
    paths = ArmPaths.of(study, spec)
    arm, seconds = timed(spec.load_arm_class().load, paths.model, cfg)
    return StudyInputs(cfg, data, x_test[selection.explain_idx], x_train[selection.background_idx], arm, seconds, paths)


def raw_rates(inputs: StudyInputs, batch_sizes: dict[str, int], raw_seconds: float, min_reps: int) -> dict[str, Any]:
    """The raw forward+backward rate at each method's batch size (one measurement per distinct size)."""
    arm = inputs.arm
    raw: dict[str, Any] = {}
    for method in inputs.cfg.explain.methods:
        size = batch_sizes[method]
        same = next((r for r in raw.values() if r["batch_size"] == size), None)
        if same is not None:  # same batch size: one measurement serves both
            raw[method] = same
            continue
        log.info("%s: raw forward+backward rate at batch %d", arm.spec.title, size)
        step = STEPS[arm.spec.key](arm, background_like_batch(inputs.background, inputs.images, size))
        raw[method] = timed_rate(step, size, arm.n_classes, raw_seconds, min_reps)
    return raw


def pass_formula(method: str, n_maps: int, b: int, nsamples: int) -> str:
    """How :meth:`common.registry.MethodSpec.passes` counted, with the numbers, in words."""
    if registry.METHODS[method].sampled:
        return f"{n_maps} maps (image x class) x {nsamples} samples"
    return f"{n_maps} maps (image x class) x 2 x {b} background"


def explainer_entry(inputs: StudyInputs, method: str, batch_size: int, raw_rate: float, repeats: int) -> dict:
    """``repeats`` timed calls of the arm's explain of what the study explained with ``method``: the passes
    they make, their rate and efficiency, and the max |difference| of the first call's maps from the study's."""
    cfg, images, background = inputs.cfg, inputs.images, inputs.background
    saved = inputs.paths.attributions(method)
    study = Explanation.load(saved) if saved.exists() else None
    n_maps = study.n_maps if study else len(images) * len(inputs.data.classes)
    passes = registry.METHODS[method].passes(n_maps, 1, len(background), cfg.explain.nsamples)
    log.info("%s: %s explainer, %d passes", inputs.arm.spec.title, method, passes)
    kwargs = {"nsamples": cfg.explain.nsamples, "seed": cfg.seed, "output": cfg.explain.output}
    kwargs["classes"] = study.classes if study else None  # what the study explained (None: every class)
    first: list[np.ndarray] = []

    def explain() -> None:
        seed_everything(cfg.seed)
        e = inputs.arm.explain(images, background, method, **kwargs)
        if not first:
            first.append(e.attributions)

    runs = call_seconds(explain, repeats)
    study_seconds = study.seconds if study else None
    max_diff = float(np.max(np.abs(first[0].astype(np.float64) - study.attributions))) if study else None
    entry = {
        "maps": n_maps,
        "passes": passes,
        "pass_formula": pass_formula(method, n_maps, len(background), cfg.explain.nsamples),
        "pass_batch_size": batch_size,
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
    return entry


def run(study: str, arm: str, raw_seconds: float = 10.0, explain_repeats: int = 2, min_reps: int = 3) -> dict:
    """Raw rates, explainer rates and efficiencies of the arm ``arm`` (a key) of the study in ``study``."""
    spec = registry.arm_spec(arm)
    inputs = load_study(Path(study), spec)
    cfg, nsamples = inputs.cfg, inputs.cfg.explain.nsamples
    batch = min(inputs.arm.explain_batch_size, nsamples)
    sizes = {m: batch if registry.METHODS[m].sampled else 2 * len(inputs.background) for m in cfg.explain.methods}
    raw = raw_rates(inputs, sizes, raw_seconds, min_reps)
    explainers = {
        m: explainer_entry(inputs, m, sizes[m], raw[m]["images_per_second"], max(1, explain_repeats))
        for m in cfg.explain.methods
    }
    machine = machine_info(cfg.deterministic)
    return {
        "framework": spec.framework,
        "arm": spec.name,
        "model_load_seconds": inputs.load_seconds,
        "n_images": len(inputs.images),
        "n_classes": len(inputs.data.classes),
        "n_background": len(inputs.background),
        "nsamples": nsamples,
        "output": cfg.explain.output,
        "explain_batch_size": inputs.arm.explain_batch_size,
        "image_size": inputs.data.image_size,
        "threads": machine.threads,
        "onednn": machine.onednn,
        "raw": raw,
        "explainers": explainers,
        "explainer_time": "re-run of the arm's explain in this process (first call: what the study paid)",
        "max_rss_mb": peak_mb(),
    }
