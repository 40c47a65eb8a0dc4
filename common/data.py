"""The shared data layer: discovery, validation, the deterministic split, decoding.

Both arms get their pixels from here, so they see the same decoded images, the same
split and the same labels. The flow is::

    discover(root)            list class folders and files, hash them, sniff formats
      -> decode_all(...)      decode + resize every image once (cached on disk)
      -> make_split(...)      seeded, stratified train/val/test assignment
      -> StudyData            the decoded images (an on-disk ImageStore, read a batch
                              at a time), the split as index arrays into it, the manifest

A data root is either split folders (``train/`` plus a held-out ``test/``, ``val/``,
``valid/`` or ``validation/``, each holding one folder per class) or class folders
only. With no root, scikit-learn's bundled ``digits`` set goes through the same path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import (
    ClassMismatchError,
    DataError,
    DataNotFoundError,
    EmptyClassError,
    NoClassesError,
    NotADirectoryDataError,
    TooFewClassesError,
    TooFewImagesError,
)
from common.imagestore import ImageStore, create_store, take, write_rows
from common.io import atomic_path, read_json, stable_key, write_json_atomic
from common.results import DatasetSummary, SkippedFile

log = logging.getLogger(__name__)

TRAIN_FOLDER = "train"
HELD_OUT_FOLDERS = ("test", "val", "valid", "validation")  # first one present is the test split
RESIZE_METHOD = "PIL.BILINEAR"  # as torchvision's transforms.Resize on PIL images (the published CNN)
DECODE_VERSION = 1  # bump when decoding changes, to invalidate old caches
SPLITS = ("train", "val", "test")
DOC_SUFFIXES = (".md", ".txt", ".rst", ".csv", ".json", ".yaml", ".yml")  # top-level data-set documentation
DIGITS_NAME = "digits"
DEFAULT_FOLDER_SIZE = 224
DEFAULT_DIGITS_SIZE = 32
DECODE_CHUNK = 32  # images per task of the decoding pool
POOL_MIN_IMAGES = 256  # fewer images decode faster in this process than a pool of processes starts


@dataclass(frozen=True)
class ImageRecord:
    path: str  # POSIX path relative to the data root (for digits: "digits/0000")
    label: int  # index into Manifest.classes
    sha256: str  # of the file's bytes (for digits: of the 8x8 pixel bytes)
    source: str  # folder the file came from: "train", "test" (held out) or "all"


@dataclass(frozen=True)
class Manifest:
    """Everything known about a data set before its pixels are decoded."""

    name: str  # data set name (folder name, or "digits")
    root: Path | None  # None for the bundled digits set
    layout: str  # "split-folders", "class-folders" or "bundled"
    classes: tuple[str, ...]  # sorted folder names
    records: tuple[ImageRecord, ...]  # sorted by path
    skipped: tuple[SkippedFile, ...] = ()
    held_out_folder: str | None = None  # e.g. "test"
    loader: Callable[[ImageRecord], Image.Image] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StudyData:
    """Decoded, split data shared by both arms."""

    manifest: Manifest  # with corrupt images moved from records to skipped
    image_size: int
    images: ImageStore | np.ndarray  # uint8 (N, S, S, 3), aligned with manifest.records (read lazily)
    labels: np.ndarray  # int64 (N,)
    split: np.ndarray  # str (N,): "train", "val" or "test"
    data_key: str  # content key of the decoded pixels and the split

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    def indices(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split == name)

    def arrays(self, name: str) -> tuple[ImageStore | np.ndarray, np.ndarray]:
        """uint8 (n, S, S, 3) images and int64 (n,) labels of one split. The images are a
        view of the decode cache (nothing read yet): index it to read a batch."""
        idx = self.indices(name)
        return take(self.images, idx), self.labels[idx]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: {"train": {"beetles": 368, ...}, ...}."""
        return {
            s: {c: int(np.sum((self.split == s) & (self.labels == k))) for k, c in enumerate(self.classes)}
            for s in SPLITS
        }


# ----------------------------------------------------------------------------- discovery


def discover(root: str | os.PathLike) -> Manifest:
    """List a data folder's classes and image files, and hash them.

    Files are accepted by content (Pillow identifies the format from the bytes, not the
    extension); files Pillow cannot identify are skipped as "not an image".

    Raises:
        DataNotFoundError, NotADirectoryDataError, NoClassesError, ClassMismatchError,
        EmptyClassError: for a data folder that cannot be used.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"data folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryDataError(f"data path is a file, not a folder: {root}")
    root = root.resolve()

    layout, sources, classes, held_out = _layout(root)
    if len(classes) < 2:
        where = sources.get("train", sources.get("all"))
        raise TooFewClassesError(
            f"only one class folder ('{classes[0]}') in {where}: a classifier needs at least two; "
            "add one folder of images per class"
        )
    records, skipped = _scan(root, sources, classes)
    manifest = Manifest(
        root.name,
        root,
        layout,
        tuple(classes),
        tuple(records),
        tuple(skipped),
        held_out,
        loader=lambda r: Image.open(root / r.path),
    )
    _check_nonempty(manifest)
    return manifest


def _layout(root: Path) -> tuple[str, dict[str, Path], list[str], str | None]:
    """The layout of a data root: ``(layout, {source: folder}, classes, held-out folder name)``.

    Raises:
        NoClassesError, ClassMismatchError: no class folders, or train/ and the held-out
        folder disagree on them.
    """
    subdirs = {p.name: p for p in _subfolders(root)}
    held_out = next((n for n in HELD_OUT_FOLDERS if n in subdirs), None)
    if held_out is not None and TRAIN_FOLDER not in subdirs:
        # a held-out folder alone is a part of a data set, not class folders named "test"
        raise NoClassesError(
            f"{root} holds {held_out}/ but no {TRAIN_FOLDER}/: give the folder holding both {TRAIN_FOLDER}/ and "
            f"{held_out}/, or put {held_out}/'s class folders beside train/'s"
        )
    if TRAIN_FOLDER in subdirs and held_out is not None:
        sources = {"train": subdirs[TRAIN_FOLDER], "test": subdirs[held_out]}
        class_sets = {s: sorted(p.name for p in _subfolders(d)) for s, d in sources.items()}
        for s, d in sources.items():
            if not class_sets[s]:
                raise NoClassesError(f"no class folders in {d}")
        if class_sets["train"] != class_sets["test"]:
            missing = sorted(set(class_sets["train"]) - set(class_sets["test"]))
            extra = sorted(set(class_sets["test"]) - set(class_sets["train"]))
            raise ClassMismatchError(
                f"class folders differ between {sources['train']} and {sources['test']}: "
                f"missing from {held_out}/: {', '.join(missing) or 'none'}; "
                f"extra in {held_out}/: {', '.join(extra) or 'none'}"
            )
        return "split-folders", sources, class_sets["train"], held_out
    # train/ alone: its class folders are the whole data set, test split by fraction
    root_for_classes = subdirs[TRAIN_FOLDER] if TRAIN_FOLDER in subdirs else root
    classes = sorted(p.name for p in _subfolders(root_for_classes))
    if not classes:
        raise NoClassesError(f"no class folders in {root_for_classes} (expected one folder per class)")
    return "class-folders", {"all": root_for_classes}, classes, None


def _scan(root: Path, sources: dict[str, Path], classes: list[str]) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Every image file of every class folder, hashed, and every other file, with why it is skipped."""
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    for source, folder in sources.items():
        for label, cls in enumerate(classes):
            for path in _files(folder / cls):
                rel = path.relative_to(root).as_posix()
                data = path.read_bytes()
                if _sniff(data):
                    records.append(ImageRecord(rel, label, hashlib.sha256(data).hexdigest(), source))
                else:
                    skipped.append(SkippedFile(rel, _unreadable_reason(data)))
    # Files lying beside the class folders (the insects archive has a .DS_Store at each
    # level) are not data either: record them, but not the data set's own documentation.
    for level in {root} | set(sources.values()):
        for path in sorted(p for p in level.iterdir() if p.is_file()):
            if level == root and path.suffix.lower() in DOC_SUFFIXES:
                continue
            reason = "image outside a class folder" if _sniff(path.read_bytes()) else "not an image"
            skipped.append(SkippedFile(path.relative_to(root).as_posix(), reason))
    return sorted(records, key=lambda r: r.path), sorted(skipped, key=lambda s: s.path)


def digits_manifest() -> Manifest:
    """scikit-learn's bundled digits (1,797 8x8 grey images, 10 classes), as a manifest.

    Ships inside scikit-learn, so the default study needs no network and no files.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    records, by_path = [], {}
    for i, (img, label) in enumerate(zip(pixels, bunch.target, strict=True)):
        rec = ImageRecord(f"digits/{i:04d}", int(label), hashlib.sha256(img.tobytes()).hexdigest(), "all")
        records.append(rec)
        by_path[rec.path] = img
    classes = tuple(str(c) for c in bunch.target_names)
    return Manifest(
        DIGITS_NAME,
        None,
        "bundled",
        classes,
        tuple(records),
        (),
        None,
        loader=lambda r: Image.fromarray(by_path[r.path], mode="L"),
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    """Every regular file below ``folder``, in a listing-order-free (sorted) order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames)
    return sorted(out)


def _sniff(data: bytes) -> bool:
    """True when Pillow recognises the bytes as an image format (reads the header only)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.size  # noqa: B018 - header parsed
        return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _unreadable_reason(data: bytes) -> str:
    """Why Pillow could not open a file: a known image signature means a damaged image."""
    if data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "corrupt image: header unreadable"
    return "not an image"


def _check_nonempty(manifest: Manifest) -> None:
    for label, cls in enumerate(manifest.classes):
        for source in sorted({r.source for r in manifest.records} or {"all"}):
            if not any(r.label == label and r.source == source for r in manifest.records):
                folder = _class_folder(manifest, cls, source)
                raise EmptyClassError(f"class '{cls}' has no usable images: {folder}")


def _class_folder(manifest: Manifest, cls: str, source: str) -> Path | str:
    if manifest.root is None:
        return f"{manifest.name}/{cls}"
    if manifest.layout == "split-folders":
        return manifest.root / (TRAIN_FOLDER if source == "train" else manifest.held_out_folder) / cls
    base = manifest.root / TRAIN_FOLDER if (manifest.root / TRAIN_FOLDER).is_dir() else manifest.root
    return base / cls


# ----------------------------------------------------------------------------- decoding


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
) -> tuple[Manifest, ImageStore]:
    """Decode every record once to uint8 (N, size, size, 3) in the on-disk cache, or find it there.

    Corrupt images are dropped from ``records`` and added to ``skipped``. The cache file
    (a ``.npy``, written atomically) is keyed by :func:`decode_key`, so a changed or added
    file gives a new key. Image files are decoded by a pool of ``workers`` processes (None:
    every core, for a set of at least ``POOL_MIN_IMAGES``), each writing its rows straight
    into the file, so no process holds more than a chunk of decoded images.

    Returns:
        The manifest without corrupt records, and the images aligned with its records (a
        store on the cache file: rows are read when indexed).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = decode_key(manifest, size, jpeg_draft)
    stem = cache / f"decoded-{_safe(manifest.name)}-{size}-{key}"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.exists() and meta.exists():
        info = read_json(meta)
        corrupt = {c["path"]: c["reason"] for c in info["corrupt"]}
        log.info("decoded images read from cache %s", npy)
    else:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            corrupt = _decode_records(manifest, size, tmp, workers, jpeg_draft)
        write_json_atomic(
            meta,
            {
                "key": key,
                "size": size,
                "resize": RESIZE_METHOD,
                "jpeg_draft": jpeg_draft,
                "corrupt": [{"path": p, "reason": r} for p, r in sorted(corrupt.items())],
            },
        )
    images = ImageStore(npy)
    if corrupt:
        records = tuple(r for r in manifest.records if r.path not in corrupt)
        skipped = tuple(
            sorted(manifest.skipped + tuple(SkippedFile(p, r) for p, r in corrupt.items()), key=lambda s: s.path)
        )
        manifest = Manifest(
            manifest.name,
            manifest.root,
            manifest.layout,
            manifest.classes,
            records,
            skipped,
            manifest.held_out_folder,
            manifest.loader,
        )
        _check_nonempty(manifest)
    if len(images) != len(manifest.records) or images.shape[1:] != (size, size, 3):
        raise RuntimeError(f"decode cache {npy} does not match the data set; delete it and rerun")
    return manifest, images


def _decode_records(manifest: Manifest, size: int, path: Path, workers: int | None, jpeg_draft: bool) -> dict[str, str]:
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
                    jpeg_draft,
                ): len(c)
                for c in chunks
            }
            for future in as_completed(futures):
                corrupt.update(future.result())
                bar.update(futures[future])
    else:  # in this process (the bundled set's images live in memory here)
        for c in chunks:
            corrupt.update(
                _decode_chunk(str(path), offset, size, {i: partial(manifest.loader, records[i]) for i in c}, jpeg_draft)
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


def _decode_files(path: str, offset: int, size: int, files: dict[int, str], jpeg_draft: bool) -> dict[int, str]:
    """A pool task: decode image files (row -> file path) into the store; {row: why} of corrupt ones."""
    return _decode_chunk(path, offset, size, {i: partial(Image.open, f) for i, f in files.items()}, jpeg_draft)


def _decode_chunk(
    path: str, offset: int, size: int, openers: dict[int, Callable[[], Image.Image]], jpeg_draft: bool
) -> dict[int, str]:
    """Decode images (row -> a function opening it) and write them into the store at ``path``."""
    rows, corrupt = {}, {}
    for i, open_image in openers.items():
        try:
            with open_image() as img:
                rows[i] = decode_image(img, size, jpeg_draft)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else ""
            corrupt[i] = f"corrupt image: {type(exc).__name__}: {message}".rstrip(": ")
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


# ----------------------------------------------------------------------------- split


def make_split(manifest: Manifest, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Assign every record to "train", "val" or "test", stratified by class and seeded.

    Test is the held-out folder when the data set has one, else a stratified
    ``test_fraction`` of all images; validation is a stratified ``val_fraction`` of the
    rest. Records are sorted by path, so the result depends on the files and the seed,
    never on the order a file system lists them in.

    Raises:
        TooFewImagesError: a class has too few images to stratify.
    """
    from sklearn.model_selection import train_test_split

    labels = np.array([r.label for r in manifest.records], dtype=np.int64)
    split = np.full(len(labels), "train", dtype=object)
    if manifest.layout == "split-folders":
        split[[i for i, r in enumerate(manifest.records) if r.source == "test"]] = "test"
    else:
        _stratify_check(manifest, np.arange(len(labels)), labels, test_fraction, "test")
        _, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
        )
        split[test_idx] = "test"
    pool = np.flatnonzero(split == "train")
    _stratify_check(manifest, pool, labels, val_fraction, "validation")
    _, val_idx = train_test_split(pool, test_size=val_fraction, stratify=labels[pool], random_state=seed)
    split[val_idx] = "val"
    _check_every_part(manifest, labels, split)
    return split.astype(str)


def _check_every_part(manifest: Manifest, labels: np.ndarray, split: np.ndarray) -> None:
    """Raise TooFewImagesError unless every class has images in train, validation and test
    (a stratified split can leave a small class out of a part when others are much larger)."""
    for k, cls in enumerate(manifest.classes):
        for part, name in (("train", "training"), ("val", "validation"), ("test", "test")):
            if not np.any((split == part) & (labels == k)):
                n = int(np.sum(labels == k))
                source = "train" if manifest.layout == "split-folders" and part != "test" else "test"
                folder = _class_folder(manifest, cls, source if manifest.layout == "split-folders" else "all")
                raise TooFewImagesError(
                    f"class '{cls}' gets no {name} image from the split ({n} usable image(s) in all): "
                    f"add images to {folder}, or remove the class"
                )


def _stratify_check(manifest: Manifest, pool: np.ndarray, labels: np.ndarray, fraction: float, what: str) -> None:
    """Raise TooFewImagesError unless every class can give and keep at least one image."""
    counts = np.bincount(labels[pool], minlength=len(manifest.classes))
    n_out = int(np.ceil(fraction * len(pool)))
    for k, n in enumerate(counts):
        if n < 2:
            folder = _class_folder(
                manifest, manifest.classes[k], "train" if manifest.layout == "split-folders" else "all"
            )
            raise TooFewImagesError(
                f"class '{manifest.classes[k]}' has {n} image(s), too few for a stratified {what} split "
                f"(need at least 2): {folder}"
            )
    if n_out < len(counts) or len(pool) - n_out < len(counts):
        raise TooFewImagesError(
            f"{len(pool)} images are too few for a stratified {what} split of {fraction:g} over "
            f"{len(counts)} classes: {manifest.root or manifest.name}"
        )


def write_split_csv(path: str | os.PathLike, manifest: Manifest, split: np.ndarray) -> None:
    """Write ``path,label,split,sha256`` (label = class name), one row per used image
    (``manifest``'s records, ``split`` aligned with them)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split", "sha256"])
            for rec, s in zip(manifest.records, split, strict=True):
                w.writerow([rec.path, manifest.classes[rec.label], s, rec.sha256])


def read_split_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def split_from_csv(manifest: Manifest, path: str | os.PathLike) -> np.ndarray:
    """The split a data stage wrote to ``path`` (:func:`write_split_csv`), aligned with
    ``manifest``'s records: what an arm's process uses instead of splitting again.

    Raises:
        DataError: the file does not list exactly these images, with these hashes and
            classes (the data set changed since the data stage, or the file was edited).
    """
    rows = {row["path"]: row for row in read_split_csv(path)}
    split = []
    for rec in manifest.records:
        row = rows.pop(rec.path, None)
        if row is None or row["sha256"] != rec.sha256 or row["label"] != manifest.classes[rec.label]:
            raise DataError(f"{rec.path} is not in {path} as the data stage wrote it; rerun the study")
        split.append(row["split"])
    if rows:
        raise DataError(f"{path} lists {len(rows)} image(s) the data set no longer holds; rerun the study")
    return np.array(split, dtype=str)


# ----------------------------------------------------------------------------- all together


def load_study_data(
    root: str | os.PathLike | None,
    image_size: int | None = None,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    jpeg_draft: bool = False,
    split_csv: str | os.PathLike | None = None,
) -> StudyData:
    """Discover, decode (cached) and split a data set; ``root=None`` = bundled digits.

    ``workers`` and ``jpeg_draft`` are :func:`decode_all`'s. ``split_csv``: take the split
    from a data stage's ``split.csv`` (:func:`split_from_csv`) instead of making it. Logs one
    warning that counts and lists the skipped files.
    """
    manifest = digits_manifest() if root is None else discover(root)
    size = image_size or (DEFAULT_DIGITS_SIZE if root is None else DEFAULT_FOLDER_SIZE)
    manifest, images = decode_all(manifest, size, cache_dir, workers, jpeg_draft)
    if manifest.skipped:
        listed = ", ".join(f"{s.path} ({s.reason})" for s in manifest.skipped)
        log.warning("skipped %d file(s) that are not usable images: %s", len(manifest.skipped), listed)
    if split_csv is None:
        split = make_split(manifest, val_fraction, test_fraction, seed)
    else:
        split = split_from_csv(manifest, split_csv)
    labels = np.array([r.label for r in manifest.records], dtype=np.int64)
    key = stable_key(decode_key(manifest, size, jpeg_draft), split.tolist())
    return StudyData(manifest, size, images, labels, split, key)


def select_stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick ``n`` positions from ``labels``, spread over the classes as evenly as possible.

    Classes take turns in class order; within a class the order is a seeded shuffle.
    Returns the picked positions sorted by class turn (deterministic for a seed).
    """
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == k))) for k in np.unique(labels)]
    n = min(n, len(labels))
    picked: list[int] = []
    while len(picked) < n:
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop(0)))
    by_class = sorted(picked, key=lambda i: (labels[i], picked.index(i)))
    return np.array(by_class, dtype=np.int64)


def format_counts_table(data: StudyData) -> str:
    """A plain-text table of images per class and split, with totals."""
    counts = data.counts()
    width = max([len("class"), len("total")] + [len(c) for c in data.classes])
    lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS) + f"  {'total':>6}"]
    for c in data.classes:
        row = [counts[s][c] for s in SPLITS]
        lines.append(f"{c:<{width}}  " + "  ".join(f"{n:>6}" for n in row) + f"  {sum(row):>6}")
    tot = [sum(counts[s].values()) for s in SPLITS]
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{n:>6}" for n in tot) + f"  {sum(tot):>6}")
    return "\n".join(lines)


def dataset_summary(data: StudyData) -> DatasetSummary:
    """The ``dataset`` section of metrics.json."""
    m = data.manifest
    return DatasetSummary(
        name=m.name,
        root=str(m.root) if m.root is not None else None,
        layout=m.layout,
        held_out_folder=m.held_out_folder,
        classes=list(m.classes),
        image_size=data.image_size,
        resize=RESIZE_METHOD,
        counts=data.counts(),
        skipped=list(m.skipped),
        data_key=data.data_key,
    )
