"""The study's data: discovered, decoded and split (:func:`load_study_data`), as both arms share it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from common.data.decode import RESIZE_METHOD, decode_all, decode_key
from common.data.discover import Manifest, digits_manifest, discover
from common.data.imagestore import ImageStore, take
from common.data.limits import DEFAULT_MAX_IMAGE_PIXELS
from common.data.split import SPLITS, make_split, split_from_csv
from common.io import stable_key
from common.results import DatasetSummary

log = logging.getLogger(__name__)

DEFAULT_FOLDER_SIZE = 224

DEFAULT_DIGITS_SIZE = 32


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
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> StudyData:
    """Discover, decode (cached) and split a data set; ``root=None`` = bundled digits.

    ``workers`` and ``jpeg_draft`` are :func:`decode_all`'s. ``split_csv``: take the split
    from a data stage's ``split.csv`` (:func:`split_from_csv`) instead of making it. Files
    that cannot be used (not images, unreadable, refused by the image library whatever it
    raises, or with more than ``max_image_pixels`` pixels) are skipped, and one warning counts
    and lists them with why.
    """
    manifest = digits_manifest() if root is None else discover(root, max_image_pixels)
    size = image_size or (DEFAULT_DIGITS_SIZE if root is None else DEFAULT_FOLDER_SIZE)
    manifest, images = decode_all(manifest, size, cache_dir, workers, jpeg_draft, max_image_pixels)
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
