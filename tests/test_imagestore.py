"""The on-disk image store: reads what is indexed, as NumPy would index the array."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.imagestore import ImageStore, concatenate, create_store, take, write_rows


@pytest.fixture
def stored(tmp_path):
    """A store file of 23 random 5x6 RGB images, written row by row, and the array it holds."""
    images = np.random.default_rng(0).integers(0, 256, (23, 5, 6, 3), dtype=np.uint8)
    path = tmp_path / "images.npy"
    offset = create_store(path, len(images), images.shape[1:])
    write_rows(path, offset, {i: images[i] for i in np.random.default_rng(1).permutation(len(images))})
    return ImageStore(path), images


def test_store_indexes_like_the_array(stored):
    store, images = stored
    assert store.shape == images.shape and store.dtype == np.uint8 and len(store) == 23 and store.size == images.size
    assert np.array_equal(np.load(store.path), images)  # a plain .npy file
    for key in (0, -1, 7, slice(3, 11), slice(None, None, 4), slice(20, 40), [5, 2, 2, 19], np.arange(23) % 3 == 0):
        assert np.array_equal(store[key], images[key]), key
    assert np.array_equal(store[4, 1, :, 2], images[4, 1, :, 2])
    assert np.array_equal(store[[1, 3], 0], images[[1, 3], 0])
    assert np.array_equal(np.asarray(store), images) and np.array_equal(np.stack(list(store)), images)
    assert store[np.array([], dtype=np.int64)].shape == (0, 5, 6, 3)


def test_views_read_nothing_until_indexed_and_compose(stored, monkeypatch):
    store, images = stored
    reads = []
    real = ImageStore.read
    monkeypatch.setattr(ImageStore, "read", lambda self, rows: reads.append(len(rows)) or real(self, rows))
    part = store.subset(np.array([9, 4, 17, 0, 12]))
    again = part.subset(slice(1, 4))  # rows 4, 17, 0 of the file
    both = concatenate(part, again)
    assert reads == [] and isinstance(both, ImageStore) and len(both) == 8
    assert np.array_equal(again[[2, 0]], images[[0, 4]]) and reads == [2]
    assert np.array_equal(np.asarray(both), images[[9, 4, 17, 0, 12, 4, 17, 0]])
    assert np.array_equal(take(images, [3, 1]), images[[3, 1]])  # plain arrays: NumPy's own indexing
    assert np.array_equal(concatenate(images[:2], images[5:6]), images[[0, 1, 5]])
    assert isinstance(take(store, [3, 1]), ImageStore)


def test_a_truncated_store_file_is_an_error(stored):
    store, _ = stored
    with open(store.path, "r+b") as fh:
        fh.truncate(store.path.stat().st_size - 10)
    with pytest.raises(OSError, match="damaged"):
        store[22]
