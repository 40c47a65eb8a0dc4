"""Micro-benchmark behind the oneDNN lever: the Keras arm's forward and forward+backward
rate in TensorFlow with its Eigen kernels and with its oneDNN kernels.

Each variant runs in a fresh process, because TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS``
once, at import. The model is the one the Keras arm explains (``KerasArm.create`` with a
random backbone, ``weights: none``; the weights do not change the cost; 10 classes):
forward = its logits through ``keras_impl.model.predictor``, forward+backward = the
benchmark's raw pass (:func:`benchmarks.efficiency.keras_step`: the gradient of one class's
summed logits w.r.t. the input pixels, as both SHAP explainers take it). Best of
``--repeats`` calls after a warm-up.

    python -m benchmarks.micro.keras_pass [--sizes 32:64 224:16] [--variants eigen onednn deterministic] [--intra-op N]
"""

from __future__ import annotations

import argparse
import json

from benchmarks.measure import call_seconds, in_child

# Each variant's environment. "deterministic" is the study's ``--deterministic`` setting
# (common.machine.deterministic_environment): Eigen's kernels plus TensorFlow's op determinism.
VARIANTS = {
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "deterministic": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_DETERMINISTIC_OPS": "1"},
}


def child(size: int, batch: int, repeats: int, intra_op: int) -> dict:
    """One variant's rates, in the child process its environment was set for."""
    # isort: off
    import keras_impl  # TensorFlow's environment (the parent has set TF_ENABLE_ONEDNN_OPTS), before TensorFlow
    import numpy as np
    import tensorflow as tf
    # isort: on

    from benchmarks.efficiency import keras_step
    from common.config import load_config
    from keras_impl import model as km
    from keras_impl.resnet50_arm import KerasArm

    tf.config.threading.set_intra_op_parallelism_threads(intra_op)  # 0: TensorFlow's choice (all cores)
    cfg = load_config(None, {f"{KerasArm.spec.key}.weights": "none"})
    arm = KerasArm.create(cfg, n_classes=10, image_size=size)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    forward = km.predictor(km.logits_model(arm.model))
    forward_backward = keras_step(arm, images)
    pixels = images.astype(np.float32)
    out = {"size": size, "batch": batch, "onednn": keras_impl.onednn_enabled(), "intra_op_threads": intra_op}
    for name, fn in (("forward", lambda: forward(pixels)), ("forward_backward", lambda: forward_backward(0))):
        fn()  # trace and warm up
        seconds = min(call_seconds(fn, repeats))
        out[f"{name}_s"] = round(seconds, 4)
        out[f"{name}_img_per_s"] = round(batch / seconds, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["32:64", "224:16"], help="SIZE:BATCH pairs")
    p.add_argument("--variants", nargs="+", default=["eigen", "onednn"], choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--intra-op", type=int, default=0, help="TensorFlow intra-op threads (default 0: all cores)")
    args = p.parse_args(argv)
    results = []
    for spec in args.sizes:
        size, batch = (int(v) for v in spec.split(":"))
        for variant in args.variants:
            settings = {"size": size, "batch": batch, "repeats": args.repeats, "intra_op": args.intra_op}
            r = in_child("benchmarks.micro.keras_pass:child", variant, env=VARIANTS[variant], **settings)
            results.append({"variant": variant, **r})
            print(
                f"{variant:7s} {size:4d} px batch {batch:3d}: forward {r['forward_img_per_s']:7.1f} img/s, "
                f"forward+backward {r['forward_backward_img_per_s']:7.1f} img/s",
                flush=True,
            )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
