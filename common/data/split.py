"""The split: a seeded, stratified train/validation/test assignment, its ``split.csv`` (and
beside it ``skipped.csv``, the files left out and why), and the stratified choice of explained
and background images."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np

from common.data.discover import Manifest, class_folder
from common.errors import DataError, TooFewImagesError
from common.io import atomic_path
from common.results import SkippedFile

SPLITS = ("train", "val", "test")


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
                folder = class_folder(manifest, cls, source if manifest.layout == "split-folders" else "all")
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
            folder = class_folder(
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


def write_skipped_csv(path: str | os.PathLike, skipped: Sequence[SkippedFile]) -> None:
    """Write ``path,reason``, one row per file of the data folder the study did not use (the
    header alone when it used every file), beside ``split.csv``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            w.writerows([s.path, s.reason] for s in skipped)


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
