"""The benchmark part ``scale``: decoding speed and peak memory as the data set grows.

For each size N of ``--scale-sizes`` it builds a synthetic folder of N JPEGs at the study's image
size (flips and crops of the insects images, or drawn images where those are missing; in a temporary
folder, removed afterwards) and measures, each in a fresh process so that its peak is its own, the
data stage's work (:func:`measure_data`, with a pool of every core and in one process) and each
selected arm's process with bounded compute (:func:`measure_arm`; a 20,000-image epoch of ResNet50
takes about 20 minutes here). Exactly what: :data:`MEASURED`. Goals (issue 16): every process's peak
grows by less than 0.5 GB from the smallest to the largest size; the pool decodes at least 1.6x as
fast as one process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from benchmarks.measure import function, in_child, peak_mb, timed
from common import registry
from common.config import StudyConfig, load_config, selected_arms
from common.io import write_text_atomic

log = logging.getLogger("benchmark")

GROWTH_GOAL_MB = 500.0
POOL_SPEEDUP_GOAL = 1.6
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "insects"
N_DRAWN_CLASSES = 3  # classes of drawn images when the insects are missing
BUILD_CHUNK = 250
MEASURED = (
    "each process's peak resident memory (ru_maxrss). Data stage: discover + decode into an empty cache + split, "
    "with a pool of every core ('pool', its largest worker reported apart) and in one process ('single'). Arm "
    "process: the study's data loaded from the cache (split as the data stage wrote it), the arm built, fit on "
    "the first `steps` training batches and one validation batch, predict_proba on `steps` test batches, then "
    "every batch of every split gathered from the cache, checked and cast to float32 (no model compute), and the "
    "arm's own pass over the whole training split (PyTorch: channel statistics; Keras: the feature cache's pixel "
    "digests)"
)


# ----------------------------------------------------------------------------- the synthetic folders


def source_images(source: Path) -> list[tuple[str, Path]]:
    """(class, file) of every JPEG under ``source``'s class folders, the classes taking turns,
    so that the first n of them hold every class."""
    by_class: dict[str, list[Path]] = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg"):
            by_class.setdefault(path.parent.name, []).append(path)
    turns = [[(cls, p) for p in files] for cls, files in sorted(by_class.items())]
    return [item for group in zip(*turns, strict=False) for item in group] + [
        item for files in turns for item in files[min(map(len, turns)) :]
    ]


def _variant(task: tuple[int, str | None, str | None, int, str]) -> None:
    """Write image ``j``: a seeded crop (80-100% of each side) and flip of a source file
    (or a drawn image when there is none), resized to ``size`` and saved as JPEG."""
    j, cls, source, size, out = task
    rng = np.random.default_rng(j)
    if source is None:
        k = j % N_DRAWN_CLASSES
        img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        img.paste((255 * (k == 0), 255 * (k == 1), 255 * (k == 2)), (size // 4, size // 4, size // 2, size // 2))
    else:
        with Image.open(source) as src:
            img = src.convert("RGB")
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img.resize((size, size), Image.BILINEAR).save(out, format="JPEG", quality=90)


def build_images(folder: Path, n: int, size: int, workers: int | None = None) -> list[Path]:
    """``n`` JPEGs of ``size`` px in ``folder/all/<class>/`` (one set, from which every size's
    folder links its first images); returns them in order."""
    sources = source_images(SOURCE) if SOURCE.is_dir() else []
    tasks = []
    for j in range(n):
        cls, src = sources[j % len(sources)] if sources else (f"class{j % N_DRAWN_CLASSES}", None)
        out = folder / "all" / cls / f"{j:06d}.jpg"
        tasks.append((j, cls, None if src is None else str(src), size, str(out)))
    for cls in sorted({t[1] for t in tasks}):
        (folder / "all" / cls).mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if not Path(t[4]).is_file()]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, whatever this process runs
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=context) as pool:
        list(pool.map(_variant, todo, chunksize=BUILD_CHUNK))
    return [Path(t[4]) for t in tasks]


def link_folder(files: list[Path], root: Path) -> Path:
    """A class-folder data set at ``root`` of hard links to ``files`` (copies where links fail)."""
    for f in files:
        target = root / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copyfile(f, target)
    return root


# ----------------------------------------------------------------------------- the part


def run_scale(
    cfg: StudyConfig, sizes: list[int], *, steps: int = 2, tmp_dir: str | None = None, on_progress=None
) -> dict[str, Any]:
    """Measure every size; return the part's record. ``on_progress(record)`` is called after each size."""
    size_px = cfg.data.image_size or 224
    base = Path(tempfile.mkdtemp(prefix="study-scale-", dir=tmp_dir))
    record: dict[str, Any] = {}
    try:
        files, build_seconds = timed(build_images, base, max(sizes), size_px)
        runs: dict[str, Any] = {}
        for n in sorted(sizes):
            log.info("benchmark: scale, %d images", n)
            runs[str(n)] = measure_size(cfg, base, files[:n], size_px, steps)
            record = {
                "image_size": size_px,
                "cores": os.cpu_count() or 1,
                "sizes": sorted(sizes),
                "steps": steps,
                "build_seconds": build_seconds,
                "source": str(SOURCE) if SOURCE.is_dir() else "drawn images (insects not found)",
                "runs": runs,
                "summary": summarise(runs),
                "goals": {"growth_mb": GROWTH_GOAL_MB, "pool_speedup": POOL_SPEEDUP_GOAL},
                "measured": MEASURED,
            }
            if on_progress is not None:
                on_progress({**record, "status": "running"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return record


def measure_size(cfg: StudyConfig, base: Path, files: list[Path], size_px: int, steps: int) -> dict[str, Any]:
    """The data stage with a pool and in one process, then every selected arm, on the first ``len(files)`` images."""
    n = len(files)
    root = link_folder(files, base / f"images-{n}")
    split_csv = str(base / f"split-{n}.csv")
    entry: dict[str, Any] = {}
    for label, workers in (("pool", os.cpu_count() or 1), ("single", 1)):
        data = dataclasses.replace(
            cfg.data, root=str(root), image_size=size_px, cache_dir=str(base / f"cache-{n}-{label}")
        )
        config = base / f"config-{n}-{label}.yaml"
        write_text_atomic(
            config, yaml.safe_dump(dataclasses.replace(cfg, data=data, out=None).to_dict(), sort_keys=False)
        )
        entry[f"data_{label}"] = in_child(
            "benchmarks.scale:measure_data",
            f"scale data ({label})",
            config=config,
            workers=workers,
            split_csv=split_csv if label == "pool" else None,
        )
        if label == "single":  # 150 KB per image at 224 px: keep one cache on disk at a time
            shutil.rmtree(base / f"cache-{n}-single", ignore_errors=True)
    entry["pool_speedup"] = (
        entry["data_pool"]["decode_images_per_second"] / entry["data_single"]["decode_images_per_second"]
    )
    config = base / f"config-{n}-pool.yaml"  # the pool's cache is filled: the arms read it
    entry["arms"] = {
        spec.key: in_child(
            "benchmarks.scale:measure_arm",
            f"scale {spec.title}",
            config=config,
            key=spec.key,
            steps=steps,
            split_csv=split_csv,
        )
        for spec in selected_arms(cfg)
    }
    shutil.rmtree(base / f"cache-{n}-pool", ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return entry


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    """Growth of each process's peak from the smallest to the largest size, and the pool's speed-up."""
    sizes = sorted(runs, key=int)
    lo, hi = runs[sizes[0]], runs[sizes[-1]]
    growth = {
        "data stage (pool)": hi["data_pool"]["max_rss_mb"] - lo["data_pool"]["max_rss_mb"],
        "data stage (one process)": hi["data_single"]["max_rss_mb"] - lo["data_single"]["max_rss_mb"],
    }
    if hi["data_pool"].get("workers_max_rss_mb") and lo["data_pool"].get("workers_max_rss_mb"):
        growth["decoding worker"] = hi["data_pool"]["workers_max_rss_mb"] - lo["data_pool"]["workers_max_rss_mb"]
    for key in hi["arms"]:
        growth[f"{hi['arms'][key]['arm']} process"] = hi["arms"][key]["max_rss_mb"] - lo["arms"][key]["max_rss_mb"]
    return {
        "from": int(sizes[0]),
        "to": int(sizes[-1]),
        "peak_growth_mb": growth,
        "max_growth_mb": max(growth.values()),
        "pool_speedup": {n: r["pool_speedup"] for n, r in runs.items()},
    }


# ----------------------------------------------------------------------------- the measurements, each in a child


def measure_data(config: str, workers: int, split_csv: str | None = None) -> dict[str, Any]:
    """The data stage's work on the configured folder into an empty cache, with ``workers`` decoding processes."""
    from common.data.decode import decode_all
    from common.data.discover import discover
    from common.data.split import make_split, write_split_csv

    cfg = load_config(Path(config))
    d, start = cfg.data, peak_mb()
    manifest, discover_seconds = timed(discover, d.root, d.max_image_pixels)
    limit = {"workers": workers, "max_image_pixels": d.max_image_pixels}
    (manifest, images), decode_seconds = timed(decode_all, manifest, d.image_size, d.cache_dir, **limit)
    split, split_seconds = timed(make_split, manifest, d.val_fraction, d.test_fraction, cfg.seed)
    if split_csv is not None:  # as the data stage writes it, for the arms' processes
        write_split_csv(Path(split_csv), manifest, split)
    return {
        "workers": workers,
        "n_images": len(images),
        "discover_seconds": discover_seconds,
        "decode_seconds": decode_seconds,
        "split_seconds": split_seconds,
        "decode_images_per_second": len(images) / decode_seconds,
        "data_stage_images_per_second": len(images) / (discover_seconds + decode_seconds + split_seconds),
        "n_split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "max_rss_mb_at_start": start,
        "max_rss_mb": peak_mb(),
        "workers_max_rss_mb": peak_mb(children=True) if workers > 1 else None,
    }


# Per arm key: the arm's own pass over the whole training split in its fit (normalisation statistics;
# the feature cache's pixel digests).
FULL_PASSES = {"pytorch": "common.data.statistics:channel_statistics", "keras": "keras_impl.transfer:pixel_digests"}


def measure_arm(config: str, key: str, steps: int, split_csv: str | None = None) -> dict[str, Any]:
    """One arm's process on the configured folder (its cache filled), with bounded compute."""
    import keras_impl  # noqa: F401  (TensorFlow's environment, before anything imports it)
    from common.arm import TrainingData
    from common.data.imagestore import take
    from experiments.layout import prepare_data

    first = lambda x, n: take(x, np.arange(n))  # the first n images, not read (a store view)

    spec, cfg = registry.arm_spec(key), load_config(Path(config))
    arm_class = spec.load_arm_class()  # imports the framework
    peaks = {"framework imported": peak_mb()}
    data = prepare_data(cfg, None if split_csv is None else Path(split_csv))  # as a study's arm process reads it
    (x_tr, y_tr), (x_va, y_va), (x_te, _) = data.arrays("train"), data.arrays("val"), data.arrays("test")
    peaks["data loaded (decode cache hit)"] = peak_mb()
    arm = arm_class.create(cfg, len(data.classes), data.image_size)
    peaks["arm created"] = peak_mb()
    batch = int(getattr(cfg.arm(key), "batch_size", 32))
    n_fit, n_val, n_pred = min(len(x_tr), steps * batch), min(len(x_va), batch), min(len(x_te), steps * batch)
    fit = TrainingData(first(x_tr, n_fit), y_tr[:n_fit], first(x_va, n_val), y_va[:n_val], data.data_key, None)
    _, fit_seconds = timed(arm.fit, fit)  # no feature cache: the features are computed here
    peaks[f"fit on {n_fit} training and {n_val} validation images"] = peak_mb()
    arm.predict_proba(first(x_te, n_pred))
    peaks[f"predict_proba on {n_pred} test images"] = peak_mb()
    order = np.random.default_rng(cfg.seed).permutation(len(x_tr))
    walk = [(x_tr, order), (x_va, np.arange(len(x_va))), (x_te, np.arange(len(x_te)))]
    n_batches, walk_seconds = timed(_gather_every_batch, arm, walk, batch, lambda: function(FULL_PASSES[key])(x_tr))
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


def _gather_every_batch(arm, splits: list, batch: int, full_pass: Callable[[], None]) -> int:
    """Every batch of every split gathered from the cache in the given order, checked and cast to float32
    as both arms feed their models, then the arm's own full pass; the number of batches."""
    n_batches = 0
    for x, order in splits:
        for i in range(0, len(x), batch):
            xb = x[order[i : i + batch]]  # gathered from the cache
            arm.check_images(xb, "batch")
            xb.astype(np.float32)
            n_batches += 1
    full_pass()
    return n_batches
