"""Micro-benchmark behind the oneDNN lever: ResNet50's forward and forward+backward rate
in TensorFlow with its Eigen kernels, its oneDNN kernels, and Eigen under XLA.

Each variant runs in a fresh process, because TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS``
once, at import. The model is what the Keras arm explains (ResNet50 with random weights,
pooled, and a 10-class dense layer; the weights do not change the cost); the
forward+backward pass is the gradient of one class's summed logits w.r.t. the input
pixels, as both SHAP explainers take it. Best of ``--repeats`` calls after a warm-up.

    python experiments/keras_pass_bench.py [--sizes 32:64 224:16] [--variants eigen onednn eigen+xla] [--intra-op N]

Results are recorded in experiments/BENCHMARKS.md; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {"eigen": ("0", False), "onednn": ("1", False), "eigen+xla": ("0", True)}


def child(size: int, batch: int, xla: bool, repeats: int, intra_op: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    tf.config.threading.set_intra_op_parallelism_threads(intra_op)  # 0: TensorFlow's choice (all cores)
    backbone = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg")
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(backbone(inputs)))

    @tf.function(jit_compile=xla)
    def forward(x):
        return model(x, training=False)

    @tf.function(jit_compile=xla)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            s = tf.reduce_sum(model(x, training=False)[:, 0])
        return tape.gradient(s, x)

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
    out = {"size": size, "batch": batch, "onednn": bool(_pywrap_util_port.IsMklEnabled()), "xla": xla,
           "intra_op_threads": intra_op}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        fn(x).numpy()  # trace and warm up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x).numpy()
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_s"] = round(best, 4)
        out[f"{name}_img_per_s"] = round(batch / best, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["32:64", "224:16"], help="SIZE:BATCH pairs")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--intra-op", type=int, default=0, help="TensorFlow intra-op threads (default 0: all cores)")
    p.add_argument("--child", nargs=3, type=int, metavar=("SIZE", "BATCH", "XLA"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        size, batch, xla = args.child
        print(json.dumps(child(size, batch, bool(xla), args.repeats, args.intra_op)))
        return 0
    results = []
    for spec in args.sizes:
        size, batch = (int(v) for v in spec.split(":"))
        for variant in args.variants:
            onednn, xla = VARIANTS[variant]
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
            proc = subprocess.run([sys.executable, __file__, "--child", str(size), str(batch), str(int(xla)),
                                   "--repeats", str(args.repeats), "--intra-op", str(args.intra_op)], env=env, capture_output=True, text=True, check=True)
            r = {"variant": variant, **json.loads(proc.stdout.strip().splitlines()[-1])}
            results.append(r)
            print(f"{variant:10s} {size:4d} px batch {batch:3d}: forward {r['forward_img_per_s']:7.1f} img/s, "
                  f"forward+backward {r['forward_backward_img_per_s']:7.1f} img/s", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
