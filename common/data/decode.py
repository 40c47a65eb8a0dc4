"""Decoding: every image decoded, converted to RGB and resized once, into an on-disk cache.

The cache is one ``.npy`` file of uint8 ``(N, S, S, 3)`` pixels per data set, size and resize
method (:mod:`common.data.imagestore`), keyed by the files' hashes, in the user's cache
folder; a pool of processes decodes large sets. Images that cannot be decoded, whatever the
image library raises, and images over the pixel limit (:mod:`common.data.limits`) are left
out and listed with the reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from common.data.discover import Manifest, check_nonempty
from common.data.imagestore import ImageStore, create_store, write_rows
from common.data.limits import DEFAULT_MAX_IMAGE_PIXELS, check_pixels, pixel_limit, unusable_reason
from common.io import atomic_path, read_json, stable_key, write_json_atomic

log = logging.getLogger(__name__)

RESIZE_METHOD = "PIL.BILINEAR"  # as torchvision's transforms.Resize on PIL images (the published CNN)

DECODE_VERSION = 1  # bump when decoding changes, to invalidate old caches

DECODE_CHUNK = 32  # images per task of the decoding pool

POOL_MIN_IMAGES = 256  # fewer images decode faster in this process than a pool of processes starts


@dataclass(frozen=True)
class DecodeOptions:
    """How each image is decoded: what every task of the decoding pool is given."""

    jpeg_draft: bool = False  # reduced-scale JPEG decoding (decode_image)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # images above it are skipped (common.data.limits)


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA, CMYK ... -> RGB (alpha dropped, as torchvision's loader does)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning
    return img.convert("RGB")


def decode_image(img: Image.Image, size: int, jpeg_draft: bool = False) -> np.ndarray:
    """Decode, convert to RGB and resize (bilinear) to uint8 (size, size, 3).

    With ``jpeg_draft`` a JPEG at least twice the size on both sides is decoded at a
    reduced scale (1/2, 1/4 or 1/8, Pillow's ``Image.draft``) before the resize: faster,
    but not the same pixels (measured in BENCHMARKS.md), so it is off by default.
    """
    if jpeg_draft and img.format == "JPEG":
        img.draft("RGB", (size, size))
    img.load()
    img = to_rgb(img).resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


CACHE_APP_NAME = "shap-framework-study"  # the cache's folder name in the user's cache folder


def default_cache_dir() -> Path:
    """Where decoded images and derived features are cached: ``$STUDY_CACHE_DIR`` when set,
    else the user's cache folder (``~/.cache/shap-framework-study`` on Linux, honouring
    ``$XDG_CACHE_HOME``; ``~/Library/Caches/...`` on macOS; ``%LOCALAPPDATA%\\...`` on
    Windows), never the checkout."""
    env = os.environ.get("STUDY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(CACHE_APP_NAME, appauthor=False))


def decode_key(manifest: Manifest, size: int, jpeg_draft: bool = False) -> str:
    """Key of the decoded pixels: every file's path and hash, the size, the resize method
    (and the reduced-scale JPEG decoding when it is on: it changes pixels)."""
    method = RESIZE_METHOD + ("+jpeg-draft" if jpeg_draft else "")
    return stable_key(
        "decode", DECODE_VERSION, manifest.name, size, method, [(r.path, r.sha256) for r in manifest.records]
    )


def decode_all(
    manifest: Manifest,
    size: int,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    jpeg_draft: bool = False,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[Manifest, ImageStore]:
    """Decode every record once to uint8 (N, size, size, 3) in the on-disk cache, or find it there.

    Images that cannot be decoded (whatever the image library raises) or have more than
    ``max_image_pixels`` pixels are dropped from ``records`` and added to ``skipped``. The
    cache file (a ``.npy``, written atomically) is keyed by :func:`decode_key`, so a changed or
    added file gives a new key; its name also holds the pixel limit, so a cache whose skipped
    files were decided under another limit is never read (the decoded pixels and their key do
    not depend on the limit). Image files are decoded by a pool of ``workers`` processes (None:
    every core, for a set of at least ``POOL_MIN_IMAGES``), each writing its rows straight
    into the file, so no process holds more than a chunk of decoded images.

    Returns:
        The manifest without corrupt records, and the images aligned with its records (a
        store on the cache file: rows are read when indexed).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = decode_key(manifest, size, jpeg_draft)
    stem = cache / f"decoded-{_safe(manifest.name)}-{size}-{key}-max{max_image_pixels}px"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.exists() and meta.exists():
        info = read_json(meta)
        corrupt = {c["path"]: c["reason"] for c in info["corrupt"]}
        log.info("decoded images read from cache %s", npy)
    else:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            corrupt = _decode_records(manifest, size, tmp, workers, DecodeOptions(jpeg_draft, max_image_pixels))
        write_json_atomic(
            meta,
            {
                "key": key,
                "size": size,
                "resize": RESIZE_METHOD,
                "jpeg_draft": jpeg_draft,
                "max_image_pixels": max_image_pixels,
                "corrupt": [{"path": p, "reason": r} for p, r in sorted(corrupt.items())],
            },
        )
    images = ImageStore(npy)
    if corrupt:
        manifest = manifest.without(corrupt)
        check_nonempty(manifest)
    if len(images) != len(manifest.records) or images.shape[1:] != (size, size, 3):
        raise RuntimeError(f"decode cache {npy} does not match the data set; delete it and rerun")
    return manifest, images


def _decode_records(
    manifest: Manifest, size: int, path: Path, workers: int | None, options: DecodeOptions
) -> dict[str, str]:
    """Decode every record into a new store file at ``path``; return {path: why} of the
    corrupt ones (their rows are left out of the file)."""
    from tqdm.auto import tqdm

    records = manifest.records
    offset = create_store(path, len(records), (size, size, 3))
    if workers is None:
        workers = (os.cpu_count() or 1) if len(records) >= POOL_MIN_IMAGES else 1
    chunks = [range(i, min(i + DECODE_CHUNK, len(records))) for i in range(0, len(records), DECODE_CHUNK)]
    corrupt: dict[int, str] = {}
    bar = tqdm(total=len(records), desc=f"decode {manifest.name} @{size}px", unit="img", leave=False)
    if workers > 1 and manifest.root is not None:  # files: a pool of processes (the GIL does not scale here)
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            futures = {
                pool.submit(
                    _decode_files,
                    str(path),
                    offset,
                    size,
                    {i: str(manifest.root / records[i].path) for i in c},
                    options,
                ): len(c)
                for c in chunks
            }
            for future in as_completed(futures):
                corrupt.update(future.result())
                bar.update(futures[future])
    else:  # in this process (the bundled set's images live in memory here)
        for c in chunks:
            corrupt.update(
                _decode_chunk(str(path), offset, size, {i: partial(manifest.loader, records[i]) for i in c}, options)
            )
            bar.update(len(c))
    bar.close()
    if corrupt:
        _drop_rows(path, sorted(corrupt))
    return {records[i].path: why for i, why in corrupt.items()}


def _pool_context() -> multiprocessing.context.BaseContext:
    """How the decoding workers start: forked (instantly) from a process that runs no
    framework, else from a clean fork server (forking a process with PyTorch's or
    TensorFlow's threads running can deadlock the child)."""
    if "fork" in multiprocessing.get_all_start_methods() and not {"torch", "tensorflow"} & set(sys.modules):
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _decode_files(path: str, offset: int, size: int, files: dict[int, str], options: DecodeOptions) -> dict[int, str]:
    """A pool task: decode image files (row -> file path) into the store; {row: why} of corrupt ones."""
    return _decode_chunk(path, offset, size, {i: partial(Image.open, f) for i, f in files.items()}, options)


def _decode_chunk(
    path: str, offset: int, size: int, openers: dict[int, Callable[[], Image.Image]], options: DecodeOptions
) -> dict[int, str]:
    """Decode images (row -> a function opening it) and write them into the store at ``path``;
    {row: why} of the images skipped: over the pixel limit (checked on the header, before any
    pixel is decoded), or refused by the image library with whatever exception it raised.
    Pillow's own limit is set here, in the process that decodes."""
    rows, corrupt = {}, {}
    with pixel_limit(options.max_image_pixels):
        for i, open_image in openers.items():
            try:
                with open_image() as img:
                    check_pixels(img, options.max_image_pixels)
                    rows[i] = decode_image(img, size, options.jpeg_draft)
            except Exception as exc:  # whatever the decoder raises on one file: skip it, say why, go on
                corrupt[i] = unusable_reason(exc, options.max_image_pixels)
    write_rows(path, offset, rows)
    return corrupt


def _drop_rows(path: Path, drop: list[int]) -> None:
    """Rewrite the store at ``path`` without the rows ``drop``, a chunk at a time."""
    store = ImageStore(path)
    keep = np.setdiff1d(np.arange(len(store)), drop)
    with atomic_path(path) as tmp:
        offset = create_store(tmp, len(keep), store.shape[1:])
        for start in range(0, len(keep), 256):
            block = store.read(keep[start : start + 256])
            write_rows(tmp, offset, {start + j: row for j, row in enumerate(block)})


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:40] or "data"
