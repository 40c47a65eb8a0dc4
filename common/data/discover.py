"""Discovery: a data folder's classes and image files, hashed, and the files that are not usable images.

Files are accepted by content (Pillow identifies the format from the bytes, not the
extension). With no folder, scikit-learn's bundled digits set becomes a manifest of the
same shape (:func:`digits_manifest`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.data.limits import (
    DEFAULT_MAX_IMAGE_PIXELS,
    TOO_LARGE,
    check_pixels,
    first_line,
    pixel_limit,
    unusable_reason,
)
from common.errors import (
    ClassMismatchError,
    DataNotFoundError,
    EmptyClassError,
    NoClassesError,
    NotADirectoryDataError,
    TooFewClassesError,
)
from common.results import SkippedFile

TRAIN_FOLDER = "train"

HELD_OUT_FOLDERS = ("test", "val", "valid", "validation")  # first one present is the test split

DOC_SUFFIXES = (".md", ".txt", ".rst", ".csv", ".json", ".yaml", ".yml")  # top-level data-set documentation

DIGITS_NAME = "digits"


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

    def without(self, unusable: Mapping[str, str]) -> Manifest:
        """This manifest with the records at the paths of ``unusable`` (path -> why) moved to ``skipped``."""
        records = tuple(r for r in self.records if r.path not in unusable)
        skipped = self.skipped + tuple(SkippedFile(p, why) for p, why in unusable.items())
        return dataclasses.replace(self, records=records, skipped=tuple(sorted(skipped, key=lambda s: s.path)))


def discover(root: str | os.PathLike, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Manifest:
    """List a data folder's classes and image files, and hash them.

    Files are accepted by content (Pillow identifies the format from the bytes, not the
    extension); files Pillow cannot identify are skipped as "not an image", images with more
    than ``max_image_pixels`` pixels (read from the header, nothing decoded) as "image too
    large", files Pillow refuses with any other error as "corrupt image: <error>", and files
    that cannot be read (a broken link, a pipe, no permission) with why.

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
    records, skipped = _scan(root, sources, classes, max_image_pixels)
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
    check_nonempty(manifest)
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


def _scan(
    root: Path, sources: dict[str, Path], classes: list[str], max_image_pixels: int
) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Every image file of every class folder, hashed, and every other file, with why it is skipped."""
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    for source, folder in sources.items():
        for label, cls in enumerate(classes):
            for path in _files(folder / cls):
                rel = path.relative_to(root).as_posix()
                data, why = _contents(path)
                if data is not None:
                    why = _sniff(data, max_image_pixels)
                if why is None:
                    records.append(ImageRecord(rel, label, hashlib.sha256(data).hexdigest(), source))
                else:
                    skipped.append(SkippedFile(rel, why))
    # Files lying beside the class folders (the insects archive has a .DS_Store at each
    # level) are not data either: record them, but not the data set's own documentation.
    for level in {root} | set(sources.values()):
        for path in sorted(p for p in level.iterdir() if not p.is_dir()):
            if level == root and path.suffix.lower() in DOC_SUFFIXES:
                continue
            data, why = _contents(path)
            if data is not None:
                why = _sniff(data, max_image_pixels)
                image = why is None or why.startswith(TOO_LARGE)
                why = "image outside a class folder" if image else "not an image"
            skipped.append(SkippedFile(path.relative_to(root).as_posix(), why))
    return sorted(records, key=lambda r: r.path), sorted(skipped, key=lambda s: s.path)


def _contents(path: Path) -> tuple[bytes | None, str | None]:
    """A file's bytes, or None and why it cannot be read (a broken link, a pipe or a device, no
    permission): a file that cannot be read is skipped, not an error."""
    if not path.is_file():  # follows links; a pipe would block the read
        return None, "broken link" if path.is_symlink() and not path.exists() else "not a regular file"
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return None, f"unreadable file: {type(exc).__name__}: {exc.strerror or first_line(exc)}"


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


def _sniff(data: bytes, max_image_pixels: int) -> str | None:
    """None when Pillow reads the bytes' header as an image of at most ``max_image_pixels``
    pixels (the header only: nothing is decoded), else why the file is skipped."""
    try:
        with pixel_limit(max_image_pixels), Image.open(io.BytesIO(data)) as img:
            check_pixels(img, max_image_pixels)
        return None
    except (UnidentifiedImageError, OSError, ValueError):
        return _unreadable_reason(data)
    except Exception as exc:  # whatever else Pillow or one of its plugins raises on a file it refuses
        return unusable_reason(exc, max_image_pixels)


IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _unreadable_reason(data: bytes) -> str:
    """Why Pillow could not open a file: a known image signature means a damaged image."""
    if data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "corrupt image: header unreadable"
    return "not an image"


def check_nonempty(manifest: Manifest) -> None:
    """Raise EmptyClassError naming the folder of a class that has no usable image in some part."""
    for label, cls in enumerate(manifest.classes):
        for source in sorted({r.source for r in manifest.records} or {"all"}):
            if not any(r.label == label and r.source == source for r in manifest.records):
                folder = class_folder(manifest, cls, source)
                raise EmptyClassError(f"class '{cls}' has no usable images: {folder}")


def class_folder(manifest: Manifest, cls: str, source: str) -> Path | str:
    """The folder of class ``cls`` in ``source`` ("train", "test" or "all"), for messages."""
    if manifest.root is None:
        return f"{manifest.name}/{cls}"
    if manifest.layout == "split-folders":
        return manifest.root / (TRAIN_FOLDER if source == "train" else manifest.held_out_folder) / cls
    base = manifest.root / TRAIN_FOLDER if (manifest.root / TRAIN_FOLDER).is_dir() else manifest.root
    return base / cls
