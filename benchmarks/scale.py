"""The benchmark part ``scale``: decoding speed and peak memory as the data set grows.

For each size N of ``--scale-sizes`` (default 1,000, 5,000 and 20,000) it builds a
synthetic image folder (class folders of N JPEGs at the study's image size: flips and
crops of the insects images, or drawn images where those are missing; in a temporary
folder that is removed afterwards, never in the repository), then measures, each in a
fresh process (``benchmarks.scale_worker``):

- the data stage's work with the decoding pool (every core) and in one process, each
  into an empty cache: images per second and peak resident memory;
- each selected arm's process on the decoded set, with bounded compute (see
  ``benchmarks.scale_worker``).

Goals (issue 16): every process's peak grows by less than 0.5 GB from the smallest to the
largest size, and the pool decodes at least 1.6x as fast as one process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from common.config import StudyConfig, selected_arms
from common.io import read_json, write_text_atomic

log = logging.getLogger("benchmark")

DEFAULT_SIZES = (1000, 5000, 20000)
GROWTH_GOAL_MB = 500.0
POOL_SPEEDUP_GOAL = 1.6
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "insects"
N_DRAWN_CLASSES = 3  # classes of drawn images when the insects are missing
BUILD_CHUNK = 250


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


def worker(run_child, what: list[str], config: Path, result: Path, label: str) -> dict[str, Any]:
    """Run ``benchmarks.scale_worker`` with ``run_child`` (benchmarks.benchmark's) and read its result."""
    result.unlink(missing_ok=True)
    run_child(
        [sys.executable, "-m", "benchmarks.scale_worker", *what, "--config", str(config), "--result", str(result)],
        label,
    )
    return read_json(result)


def run_scale(
    cfg: StudyConfig, sizes: list[int], run_child, *, steps: int = 2, tmp_dir: str | None = None, on_progress=None
) -> dict[str, Any]:
    """Measure every size; return the part's record. ``on_progress(record)`` is called after each size."""
    size_px = cfg.data.image_size or 224
    cores = os.cpu_count() or 1
    arms = selected_arms(cfg)
    runs: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="study-scale-", dir=tmp_dir))
    record: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        files = build_images(base, max(sizes), size_px)
        build_seconds = time.perf_counter() - t0
        for n in sorted(sizes):
            log.info("benchmark: scale, %d images", n)
            root = link_folder(files[:n], base / f"images-{n}")
            entry: dict[str, Any] = {}
            for label, workers in (("pool", cores), ("single", 1)):
                run_cfg = _config(cfg, root, size_px, base / f"cache-{n}-{label}")
                config = base / f"config-{n}-{label}.yaml"
                write_text_atomic(config, yaml.safe_dump(run_cfg.to_dict(), sort_keys=False))
                split_csv = ["--split-csv", str(base / f"split-{n}.csv")] if label == "pool" else []
                entry[f"data_{label}"] = worker(
                    run_child,
                    ["data", "--workers", str(workers), *split_csv],
                    config,
                    base / "result.json",
                    f"scale data ({label})",
                )
                if label == "single":  # 150 KB per image at 224 px: keep one cache on disk at a time
                    shutil.rmtree(base / f"cache-{n}-single", ignore_errors=True)
            entry["pool_speedup"] = (
                entry["data_pool"]["decode_images_per_second"] / entry["data_single"]["decode_images_per_second"]
            )
            config = base / f"config-{n}-pool.yaml"  # the pool's cache is filled: the arms read it
            entry["arms"] = {}
            for spec in arms:
                entry["arms"][spec.key] = worker(
                    run_child,
                    ["arm", "--arm", spec.key, "--steps", str(steps), "--split-csv", str(base / f"split-{n}.csv")],
                    config,
                    base / "result.json",
                    f"scale {spec.title}",
                )
            shutil.rmtree(base / f"cache-{n}-pool", ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            runs[str(n)] = entry
            record = {
                "image_size": size_px,
                "cores": cores,
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


MEASURED = (
    "each process's peak resident memory (ru_maxrss). Data stage: discover + decode into an empty cache + split, "
    "with a pool of every core ('pool', its largest worker reported apart) and in one process ('single'). Arm "
    "process: the study's data loaded from the cache (split as the data stage wrote it), the arm built, fit on "
    "the first `steps` training batches and one validation batch, predict_proba on `steps` test batches, then "
    "every batch of every split gathered from the cache, checked and cast to float32 (no model compute), and the "
    "arm's own pass over the whole training split (PyTorch: channel statistics; Keras: the feature cache's pixel "
    "digests)"
)


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


def _config(cfg: StudyConfig, root: Path, size: int, cache: Path) -> StudyConfig:
    data = dataclasses.replace(cfg.data, root=str(root), image_size=size, cache_dir=str(cache))
    return dataclasses.replace(cfg, data=data, out=None)
