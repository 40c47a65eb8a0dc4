"""Decoded images on disk, read a batch at a time: memory that does not grow with the data set.

The decoded-image cache is one raw ``.npy`` file of uint8 ``(N, S, S, 3)`` pixels (NumPy's
own format: ``np.load(path, mmap_mode="r")`` opens it as a memory map). An
:class:`ImageStore` is a view of some of its rows — a split is an index array into the
file — that reads only the rows a caller indexes, so a process holds one batch of pixels,
never a split.

Rows are read with plain file reads (seek + ``readinto``) rather than through a memory map:
every page a process touches through a map counts as its resident memory until the map
is closed (measured here: gathering 4,000 224-px images through ``np.load(mmap_mode="r")``
raised the peak resident set from 25 MB to 600 MB; the same reads with ``os.pread``, to
35 MB). The kernel's page cache keeps recently read rows either way.

A store is written once, by rows (:func:`create_store`, :func:`write_rows`; the decoding
workers write their rows themselves, by plain file writes), and then only read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def create_store(path: str | os.PathLike, n: int, row_shape: Sequence[int]) -> int:
    """Create (or truncate) a uint8 ``.npy`` file of ``(n, *row_shape)`` zeros without
    touching its pixels (a sparse file); return the byte offset of row 0."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *row_shape))
    offset = int(mm.offset)
    del mm  # nothing was touched: no page of the file was loaded
    return offset


def write_rows(path: str | os.PathLike, offset: int, rows: dict[int, np.ndarray]) -> None:
    """Write uint8 rows (row index -> pixels of the store's row shape) into a store file
    made by :func:`create_store`, by file writes (nothing of the file is mapped)."""
    with open(path, "r+b", buffering=0) as fh:
        for i, row in rows.items():
            data = np.ascontiguousarray(row, dtype=np.uint8)
            fh.seek(offset + i * data.nbytes)
            fh.write(memoryview(data).cast("B"))


class ImageStore:
    """A read-only, lazily read uint8 ``(n, H, W, C)`` array: rows ``rows`` of a ``.npy`` file.

    Indexing reads: ``store[i]`` gives one image, ``store[a:b]`` and ``store[index_array]``
    give an ndarray of those images (in the order asked); :meth:`subset` gives another
    store without reading anything. ``np.asarray(store)`` reads every row (for small sets).
    """

    def __init__(self, path: str | os.PathLike, rows: np.ndarray | None = None):
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r")  # reads the header only
        if header.dtype != np.uint8 or header.ndim != 4:
            raise ValueError(f"{self.path}: expected uint8 (N, H, W, C) images, got {header.dtype} {header.shape}")
        self._n_file = int(header.shape[0])
        self._row_shape = tuple(int(s) for s in header.shape[1:])
        self._offset = int(header.offset)
        del header
        self._row_bytes = int(np.prod(self._row_shape))
        self.rows = np.arange(self._n_file, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1 or (len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= self._n_file)):
            raise IndexError(f"rows out of range for the {self._n_file} images in {self.path}")

    # -- the ndarray attributes the study's code reads

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self._row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def size(self) -> int:
        return len(self.rows) * self._row_bytes

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ImageStore({str(self.path)!r}, shape={self.shape})"

    # -- reading

    def subset(self, index: Any) -> ImageStore:
        """The images at ``index`` (positions in this store: an int array, a boolean mask or
        a slice) as a store; nothing is read."""
        return ImageStore._view(self, self.rows[index])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # e.g. store[i, :, :, 0]: read the images, index the rest
            return self[key[0]][(slice(None), *key[1:]) if not np.isscalar(key[0]) else key[1:]]
        if isinstance(key, (int, np.integer)):
            return self.read(self.rows[[key]])[0]
        return self.read(self.rows[key])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read(self.rows)
        return out if dtype is None else out.astype(dtype)

    def __iter__(self):
        for start in range(0, len(self), 256):
            yield from self[start : start + 256]

    def read(self, file_rows: np.ndarray) -> np.ndarray:
        """The images at ``file_rows`` (row indices into the file), in that order, as a new
        uint8 array; consecutive rows are read in one call."""
        file_rows = np.asarray(file_rows, dtype=np.int64).ravel()
        out = np.empty((len(file_rows), *self._row_shape), np.uint8)
        if len(file_rows) == 0:
            return out
        flat = out.reshape(len(file_rows), -1)
        breaks = np.flatnonzero(np.diff(file_rows) != 1) + 1  # runs of consecutive file rows
        with open(self.path, "rb", buffering=0) as fh:
            for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(file_rows)], strict=True):
                buf = memoryview(flat[start:stop]).cast("B")
                fh.seek(self._offset + int(file_rows[start]) * self._row_bytes)
                while len(buf):  # a raw read may return fewer bytes than asked
                    got = fh.readinto(buf)
                    if not got:
                        raise OSError(f"{self.path} ends before row {file_rows[start]}: the cache is damaged")
                    buf = buf[got:]
        return out

    @classmethod
    def _view(cls, store: ImageStore, rows: np.ndarray) -> ImageStore:
        view = cls.__new__(cls)
        view.__dict__.update(store.__dict__)
        view.rows = np.asarray(rows, dtype=np.int64).ravel()
        return view


def take(images: np.ndarray | ImageStore, index: Any) -> np.ndarray | ImageStore:
    """``images[index]`` without reading when ``images`` is a store (a view), else NumPy's copy."""
    return images.subset(index) if isinstance(images, ImageStore) else np.asarray(images)[index]


def concatenate(first: np.ndarray | ImageStore, second: np.ndarray | ImageStore) -> np.ndarray | ImageStore:
    """Two image sets one after the other: a view when both are views of one store file."""
    if isinstance(first, ImageStore) and isinstance(second, ImageStore) and first.path == second.path:
        return ImageStore._view(first, np.concatenate([first.rows, second.rows]))
    return np.concatenate([np.asarray(first), np.asarray(second)])
