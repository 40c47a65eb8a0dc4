"""The ``scale`` part's measurements, each in a fresh process (so its peak memory is its own).

Started by ``benchmarks.scale`` as
``python -m benchmarks.scale_worker data|arm --config CFG.yaml --result R.json [...]``:

- ``data --workers W``: the data stage's work on the configured folder with an empty
  cache: discover (list, hash, sniff), decode into the on-disk cache with ``W`` processes
  (``common.data.decode_all``) and split; seconds of each, decoded images per second, and
  the peak resident memory of this process and of its largest decoding worker.
- ``arm --arm KEY``: one arm's process on the same folder (cache already filled): the
  study's data (``experiments.pipeline.prepare_data``, with the split the pool's data
  measurement wrote, ``--split-csv``, as a study's arm reads it), the arm built as in a study, then
  with bounded compute (a 20,000-image epoch of ResNet50 takes about 20 minutes here):
  (1) ``arm.fit`` on the first ``--steps`` training batches and one validation batch
  (the arm's real training code, Keras's feature route included); (2) ``arm.predict_proba``
  on the first ``--steps`` test batches; (3) the data path over every image of every
  split: every batch of the arm's batch size gathered from the cache (training ones in a
  shuffled order), checked by the arm and cast to float32 as both arms feed their models,
  plus the arm's own pass over the whole training split (``FULL_PASSES``). The peak
  resident memory is read after each step (``ru_maxrss``: a peak, so each value includes
  the steps before it).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import registry
from common.config import load_config
from common.io import write_json_atomic


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory so far, MB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def measure_data(config: Path, workers: int, split_csv: Path | None = None) -> dict[str, Any]:
    from common.data.decode import decode_all
    from common.data.discover import discover
    from common.data.split import make_split, write_split_csv

    cfg = load_config(config)
    d = cfg.data
    start = peak_mb()
    t0 = time.perf_counter()
    manifest = discover(d.root)
    t1 = time.perf_counter()
    manifest, images = decode_all(manifest, d.image_size, d.cache_dir, workers=workers)
    t2 = time.perf_counter()
    split = make_split(manifest, d.val_fraction, d.test_fraction, cfg.seed)
    t3 = time.perf_counter()
    if split_csv is not None:  # as the data stage writes it, for the arms' processes
        write_split_csv(split_csv, manifest, split)
    return {
        "workers": workers,
        "n_images": len(images),
        "discover_seconds": t1 - t0,
        "decode_seconds": t2 - t1,
        "split_seconds": t3 - t2,
        "decode_images_per_second": len(images) / (t2 - t1),
        "data_stage_images_per_second": len(images) / (t3 - t0),
        "n_split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "max_rss_mb_at_start": start,
        "max_rss_mb": peak_mb(),
        "workers_max_rss_mb": peak_mb(resource.RUSAGE_CHILDREN) if workers > 1 else None,
    }


def _channel_statistics(arm, x_train) -> None:
    from pytorch_impl.arm import channel_statistics

    channel_statistics(x_train)


def _pixel_digests(arm, x_train) -> None:
    from keras_impl.train import pixel_digests

    pixel_digests(x_train)


# Per arm key: the arm's own pass over the whole training split in its fit (normalisation
# statistics; the feature cache's pixel digests), as benchmarks.bench_worker keys its steps.
FULL_PASSES: dict[str, Callable[[Any, Any], None]] = {"pytorch": _channel_statistics, "keras": _pixel_digests}


def measure_arm(config: Path, key: str, steps: int, split_csv: Path | None = None) -> dict[str, Any]:
    from common.arm import TrainingData
    from experiments.layout import prepare_data

    spec = registry.arm_spec(key)
    cfg = load_config(config)
    arm_class = spec.load_arm_class()  # imports the framework
    peaks = {"framework imported": peak_mb()}
    data = prepare_data(cfg, split_csv)  # the data stage's split, as a study's arm process reads it
    (x_tr, y_tr), (x_va, y_va), (x_te, _) = data.arrays("train"), data.arrays("val"), data.arrays("test")
    peaks["data loaded (decode cache hit)"] = peak_mb()
    arm = arm_class.create(cfg, len(data.classes), data.image_size)
    peaks["arm created"] = peak_mb()
    batch = int(getattr(cfg.arm(key), "batch_size", 32))
    n_fit, n_val = min(len(x_tr), steps * batch), min(len(x_va), batch)
    t0 = time.perf_counter()
    arm.fit(
        TrainingData(
            _first(x_tr, n_fit),
            y_tr[:n_fit],
            _first(x_va, n_val),
            y_va[:n_val],
            data.data_key,
            None,  # no feature cache: the features are computed here
        )
    )
    fit_seconds = time.perf_counter() - t0
    peaks[f"fit on {n_fit} training and {n_val} validation images"] = peak_mb()
    n_pred = min(len(x_te), steps * batch)
    arm.predict_proba(_first(x_te, n_pred))
    peaks[f"predict_proba on {n_pred} test images"] = peak_mb()

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n_batches = 0
    for x, order in ((x_tr, rng.permutation(len(x_tr))), (x_va, np.arange(len(x_va))), (x_te, np.arange(len(x_te)))):
        for i in range(0, len(x), batch):
            xb = x[order[i : i + batch]]  # gathered from the cache
            arm.check_images(xb, "batch")
            xb.astype(np.float32)  # both arms feed float32 pixels
            n_batches += 1
    FULL_PASSES[key](arm, x_tr)
    walk_seconds = time.perf_counter() - t0
    peaks["every batch of every split gathered"] = peak_mb()
    return {
        "arm": spec.name,
        "n_images": len(data.labels),
        "n_split": {"train": len(x_tr), "val": len(x_va), "test": len(x_te)},
        "batch_size": batch,
        "fit_images": n_fit,
        "fit_seconds": fit_seconds,
        "predict_images": n_pred,
        "walk_batches": n_batches,
        "walk_seconds": walk_seconds,
        "max_rss_mb_after": peaks,
        "max_rss_mb": peak_mb(),
    }


def _first(x, n: int):
    """The first ``n`` images of ``x`` without reading them (a store view)."""
    from common.data.imagestore import take

    return take(x, np.arange(n))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["data", "arm"], help="the data stage's work, or one arm's process")
    p.add_argument("--config", required=True, type=Path, help="the study config (data.root: the synthetic folder)")
    p.add_argument("--result", required=True, type=Path, help="JSON file to write the measurements to")
    p.add_argument("--workers", type=int, default=1, help="decoding processes for 'data' (default: 1)")
    p.add_argument("--arm", choices=list(registry.ARMS), help="the arm for 'arm'")
    p.add_argument("--steps", type=int, default=2, help="training and test batches computed for 'arm' (default: 2)")
    p.add_argument("--split-csv", type=Path, help="'data': write the split there; 'arm': read it from there")
    args = p.parse_args(argv)
    if args.what == "arm" and not args.arm:
        p.error("'arm' needs --arm")
    if args.what == "data":
        result = measure_data(args.config, args.workers, args.split_csv)
    else:
        import keras_impl  # noqa: F401  (TensorFlow's environment, before anything imports it)

        result = measure_arm(args.config, args.arm, args.steps, args.split_csv)
    write_json_atomic(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
