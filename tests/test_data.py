"""The shared data layer: discovery, validation, split, decode cache, digits."""

from __future__ import annotations

import csv
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import common.data.decode as decode_mod
import common.data.discover as discover_mod
from common.data.dataset import load_study_data
from common.data.decode import decode_all, decode_key
from common.data.discover import digits_manifest, discover
from common.data.imagestore import ImageStore
from common.data.split import make_split, select_stratified, write_split_csv
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

INSECTS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "insects"


@pytest.fixture
def tree(split_folders):
    """This module's usual split-folder set: classes ants and bees, ``n`` distinct noise
    JPEGs (18x24) per class in train/ and in the held-out folder."""

    def make(root: Path, classes=("ants", "bees"), n: int = 6, held_out: str = "test") -> Path:
        return split_folders(
            root,
            classes=classes,
            n_train=n,
            n_test=n,
            held_out=held_out,
            size=(18, 24),
            fmt="jpeg",
            pattern="noise",
            seed=1,
        )

    return make


# ----------------------------------------------------------------------------- discovery and files


def test_discovery_skips_non_images_and_corrupt_and_converts_modes(tmp_path, caplog, tree, image_file):
    root = tree(tmp_path / "ds")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "train" / "ants" / "notes.txt").write_text("not an image")
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(big)
    good = big.read_bytes()
    (root / "train" / "ants" / "broken.jpg").write_bytes(good[: len(good) // 3])  # truncated in the scan data
    (root / "train" / "ants" / "headless.jpg").write_bytes(good[:40])  # truncated in the header
    bees = root / "train" / "bees"
    image_file(bees / "grey.png", mode="L")
    image_file(bees / "rgba.png", mode="RGBA")
    image_file(bees / "palette.png", mode="P")
    image_file(bees / "cmyk.jpg", mode="CMYK", fmt="JPEG")
    image_file(bees / "really_a_png.jpg", fmt="PNG")  # wrong extension, real image

    with caplog.at_level(logging.WARNING):
        data = load_study_data(root, 16, cache_dir=tmp_path / "cache")
    m = data.manifest
    skipped = {s.path: s.reason for s in m.skipped}
    assert skipped[".DS_Store"] == "not an image"
    assert skipped["train/.DS_Store"] == "not an image"
    assert skipped["train/ants/notes.txt"] == "not an image"
    assert skipped["train/ants/broken.jpg"].startswith("corrupt image")
    assert skipped["train/ants/headless.jpg"] == "corrupt image: header unreadable"
    assert len(skipped) == 5
    paths = {r.path for r in m.records}
    for name in ("grey.png", "rgba.png", "palette.png", "cmyk.jpg", "really_a_png.jpg"):
        assert f"train/bees/{name}" in paths
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (16, 16, 3)
    # one warning that counts and lists the skipped files
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "5 file(s)" in warnings[0].getMessage() and "broken.jpg" in warnings[0].getMessage()
    # the grey image is grey in RGB (all channels equal)
    grey = data.images[[r.path for r in m.records].index("train/bees/grey.png")]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_layouts_and_class_order(tmp_path, tree, class_folders):
    root = tree(tmp_path / "split", classes=("zebra", "ant", "Mole"))
    m = discover(root)
    assert m.layout == "split-folders" and m.held_out_folder == "test"
    assert m.classes == tuple(sorted(("zebra", "ant", "Mole")))
    flat = class_folders(tmp_path / "flat", classes=("b", "a"), n=5)
    m2 = discover(flat)
    assert m2.layout == "class-folders" and m2.classes == ("a", "b") and m2.held_out_folder is None
    for name in ("val", "valid", "validation"):
        alt = tree(tmp_path / f"alt_{name}", held_out=name)
        assert discover(alt).held_out_folder == name


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: p / "missing", DataNotFoundError),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", NotADirectoryDataError),
        (lambda p: (p / "empty").mkdir() or p / "empty", NoClassesError),
    ],
)
def test_bad_paths(tmp_path, make, error):
    with pytest.raises(error) as exc:
        discover(make(tmp_path))
    assert str(tmp_path) in str(exc.value) and "\n" not in str(exc.value)


def test_empty_class_is_named(tmp_path, tree):
    root = tree(tmp_path / "ds")
    for f in (root / "test" / "bees").iterdir():
        f.unlink()
    (root / "test" / "bees" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(EmptyClassError, match=r"'bees'.*test/bees"):
        discover(root)


def test_class_mismatch_names_missing_and_extra(tmp_path, tree):
    root = tree(tmp_path / "ds", classes=("ants", "bees"))
    (root / "test" / "bees").rename(root / "test" / "wasps")
    with pytest.raises(ClassMismatchError, match=r"missing from test/: bees; extra in test/: wasps"):
        discover(root)


def test_too_few_images_to_stratify(tmp_path, class_folders):
    root = class_folders(tmp_path / "flat", n={"many": 6, "lonely": 1})
    with pytest.raises(DataError) as exc:  # one of the data errors the command line reports in one line
        load_study_data(root, 8, cache_dir=tmp_path / "c")
    assert isinstance(exc.value, TooFewImagesError) and "'lonely'" in str(exc.value)


# ----------------------------------------------------------------------------- layouts that cannot be compared
# The rule: after discovery and skips, at least two classes, the same classes in every part,
# and every class present in train, validation and test. Each refusal names the folder and
# the class and says what to do, in one line.


def test_a_single_class_is_refused(tmp_path, class_folders, split_folders):
    flat = class_folders(tmp_path / "flat", classes=("ants",), n=10)
    with pytest.raises(TooFewClassesError, match=r"only one class folder \('ants'\) in .*flat: .*at least two"):
        discover(flat)
    split = split_folders(tmp_path / "split", classes=("ants",))
    with pytest.raises(TooFewClassesError, match=r"'ants'.*split/train"):
        discover(split)


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_a_held_out_folder_alone_is_not_read_as_class_folders(tmp_path, split_folders, held_out):
    root = split_folders(tmp_path / "ds", held_out=held_out)
    for cls in (root / "train").iterdir():  # only <held_out>/ is left
        for f in cls.iterdir():
            f.unlink()
        cls.rmdir()
    (root / "train").rmdir()
    with pytest.raises(NoClassesError) as exc:
        discover(root)
    message = str(exc.value)
    assert f"holds {held_out}/ but no train/" in message and str(root) in message and "\n" not in message


def test_a_class_without_usable_training_images_is_named(tmp_path, tree):
    root = tree(tmp_path / "ds")
    for f in (root / "train" / "ants").iterdir():
        f.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))  # damaged images only: all skipped
    with pytest.raises(EmptyClassError, match=r"'ants' has no usable images: .*train/ants"):
        load_study_data(root, 8, cache_dir=tmp_path / "c")


def test_a_class_the_split_leaves_without_validation_images_is_refused(tmp_path, class_folders):
    # 3 images: one goes to test, two stay in train, and the stratified 20 % validation
    # share of the 34 training images (7) rounds the small class's part to 0
    root = class_folders(tmp_path / "flat", n={"big": 40, "small": 3}, pattern="noise", size=8)
    with pytest.raises(TooFewImagesError) as exc:
        load_study_data(root, 8, cache_dir=tmp_path / "c")
    message = str(exc.value)
    assert "'small' gets no validation image" in message and str(root / "small") in message
    assert "add images to" in message


# ----------------------------------------------------------------------------- split


def test_split_is_seeded_stratified_and_listing_order_free(tmp_path, monkeypatch, class_folders):
    manifest = digits_manifest()
    a = make_split(manifest, 0.2, 0.2, seed=0)
    assert np.array_equal(a, make_split(manifest, 0.2, 0.2, seed=0))
    assert not np.array_equal(a, make_split(manifest, 0.2, 0.2, seed=1))
    labels = np.array([r.label for r in manifest.records])
    n_test = (a == "test").sum()
    pool = a != "test"
    n_val = (a == "val").sum()
    for k in range(10):
        # each class's share within one image of exact
        assert abs((labels[a == "test"] == k).sum() - n_test * (labels == k).mean()) <= 1
        assert abs((labels[a == "val"] == k).sum() - n_val * (labels[pool] == k).mean()) <= 1
    assert abs(n_val - 0.2 * pool.sum()) <= 1

    # a file system that lists files in another order gives the same split
    root = class_folders(tmp_path / "flat", classes=("a", "b", "c"), n=8, size=12)
    first = load_study_data(root, 8, cache_dir=tmp_path / "c")
    real_walk = discover_mod.os.walk
    monkeypatch.setattr(discover_mod.os, "walk", lambda p: ((d, ds[::-1], fs[::-1]) for d, ds, fs in real_walk(p)))
    second = load_study_data(root, 8, cache_dir=tmp_path / "c")
    assert [r.path for r in first.manifest.records] == [r.path for r in second.manifest.records]
    assert np.array_equal(first.split, second.split) and first.data_key == second.data_key


def test_held_out_folder_is_the_test_split(tmp_path, tree):
    root = tree(tmp_path / "ds", n=10)
    data = load_study_data(root, 8, cache_dir=tmp_path / "c")
    for rec, s in zip(data.manifest.records, data.split, strict=True):
        assert (s == "test") == rec.path.startswith("test/")
    assert (data.split == "val").sum() == 4  # 20% of 20 training images, 2 per class


def test_split_csv_columns(tmp_path, tree):
    root = tree(tmp_path / "ds")
    data = load_study_data(root, 8, cache_dir=tmp_path / "c")
    write_split_csv(tmp_path / "out" / "split.csv", data.manifest, data.split)
    with open(tmp_path / "out" / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "split", "sha256"]
    assert len(rows) == len(data.labels)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert all((root / r["path"]).is_file() and len(r["sha256"]) == 64 for r in rows)
    assert {r["label"] for r in rows} == {"ants", "bees"}


def test_an_arm_process_takes_the_split_the_data_stage_wrote_and_refuses_a_changed_data_set(tmp_path, tree, image_file):
    root = tree(tmp_path / "ds")
    data = load_study_data(root, 8, cache_dir=tmp_path / "c", seed=3)
    csv_path = tmp_path / "out" / "split.csv"
    write_split_csv(csv_path, data.manifest, data.split)
    # another seed would split otherwise: the split comes from the file, not from a new split
    again = load_study_data(root, 8, cache_dir=tmp_path / "c", seed=0, split_csv=csv_path)
    assert np.array_equal(again.split, data.split) and again.data_key == data.data_key
    assert not np.array_equal(load_study_data(root, 8, cache_dir=tmp_path / "c", seed=0).split, data.split)

    image_file(root / "train" / "ants" / "00.jpg", color=(1, 2, 3), fmt="JPEG")  # one file changed
    with pytest.raises(DataError, match=r"train/ants/00\.jpg is not in .*split\.csv as the data stage wrote it"):
        load_study_data(root, 8, cache_dir=tmp_path / "c", split_csv=csv_path)
    (root / "train" / "ants" / "00.jpg").unlink()  # one file gone
    with pytest.raises(DataError, match=r"lists 1 image\(s\) the data set no longer holds"):
        load_study_data(root, 8, cache_dir=tmp_path / "c", split_csv=csv_path)


def test_select_stratified():
    labels = np.repeat(np.arange(3), [10, 5, 8])
    idx = select_stratified(labels, 6, seed=0)
    assert np.bincount(labels[idx], minlength=3).tolist() == [2, 2, 2]
    assert np.array_equal(idx, select_stratified(labels, 6, seed=0))
    assert not np.array_equal(idx, select_stratified(labels, 6, seed=3))
    assert len(set(select_stratified(labels, 23, seed=0).tolist())) == 23


# ----------------------------------------------------------------------------- decode cache


def test_second_load_is_served_from_cache_and_a_changed_file_invalidates_it(tmp_path, monkeypatch, tree, image_file):
    root = tree(tmp_path / "ds")
    cache = tmp_path / "cache"
    calls = []  # one entry per image decoded
    real = decode_mod._decode_records

    def counting(manifest, *args):
        calls.extend([1] * len(manifest.records))
        return real(manifest, *args)

    monkeypatch.setattr(decode_mod, "_decode_records", counting)
    first = load_study_data(root, 12, cache_dir=cache)
    assert len(calls) == len(first.labels) == 24
    calls.clear()
    second = load_study_data(root, 12, cache_dir=cache)
    assert calls == []  # no image decoded
    assert np.array_equal(first.images, second.images) and first.data_key == second.data_key

    # a changed file (new content) invalidates the cache
    target = root / "train" / "ants" / "03.jpg"
    Image.fromarray(np.zeros((18, 24, 3), np.uint8)).save(target)
    third = load_study_data(root, 12, cache_dir=cache)
    assert len(calls) == 24 and third.data_key != first.data_key
    pos = [r.path for r in third.manifest.records].index("train/ants/03.jpg")
    assert third.images[pos].max() == 0
    assert len(list(cache.glob("decoded-*.npy"))) == 2 and list(cache.glob(".*tmp*")) == []  # written atomically

    # an added file too; another size is another cache entry
    calls.clear()
    image_file(root / "train" / "bees" / "new.png")
    fourth = load_study_data(root, 12, cache_dir=cache)
    assert len(calls) == 25 and len(fourth.labels) == 25
    calls.clear()
    load_study_data(root, 10, cache_dir=cache)
    assert len(calls) == 25


def test_decode_is_bilinear_resize_of_rgb(tmp_path, class_folders):
    root = class_folders(tmp_path / "flat", classes=("a", "b"), n=5, size=(30, 40))
    m = discover(root)
    _, images = decode_all(m, 8, tmp_path / "c")
    for i in (0, 7):
        expected = np.asarray(Image.open(root / m.records[i].path).convert("RGB").resize((8, 8), Image.BILINEAR))
        assert np.array_equal(images[i], expected)


def test_png_folders_decode_to_the_in_memory_images(tmp_path, class_folders, tiny_images):
    # The on-disk and in-memory builders draw the same images: PNG at the drawn size is lossless.
    root = class_folders(tmp_path / "flat", n=4, size=16, seed=5)
    manifest = discover(root)
    _, decoded = decode_all(manifest, 16, tmp_path / "c")
    images, labels = tiny_images(4, 16, seed=5)
    order = [int(r.path.split("/")[1].split(".")[0]) + 4 * r.label for r in manifest.records]
    assert manifest.classes == ("ants", "bees", "wasps") and sorted(order) == list(range(12))
    assert np.array_equal(decoded, images[order])
    assert [r.label for r in manifest.records] == labels[order].tolist()


# ----------------------------------------------------------------------------- the default data set


def test_digits_default_is_offline_and_32px_rgb(tmp_path):
    data = load_study_data(None, cache_dir=tmp_path / "c")
    assert data.manifest.name == "digits" and data.classes == tuple(str(i) for i in range(10))
    assert data.images.shape == (1797, 32, 32, 3) and data.images.dtype == np.uint8
    pixels = np.asarray(data.images)
    assert pixels.max() == 255 and pixels.min() == 0
    counts = data.counts()
    assert sum(counts["test"].values()) == 360 and sum(counts["val"].values()) == 288


# ----------------------------------------------------------------------------- the real insects data


@pytest.mark.insects
@pytest.mark.skipif(not INSECTS.is_dir(), reason=f"insects data not found at {INSECTS}")
def test_insects_counts(tmp_path):
    data = load_study_data(INSECTS, 32, cache_dir=tmp_path / "c")
    counts = data.counts()
    train = {c: counts["train"][c] + counts["val"][c] for c in data.classes}
    assert train == {"beetles": 460, "cockroach": 240, "dragonflies": 319}
    assert counts["test"] == {"beetles": 60, "cockroach": 60, "dragonflies": 60}
    assert len(data.manifest.skipped) == 3
    assert all(s.path.endswith(".DS_Store") and s.reason == "not an image" for s in data.manifest.skipped)
    n_val = sum(counts["val"].values())
    assert abs(n_val - 0.2 * 1019) <= 1
    for c in data.classes:  # stratified: each class's validation share within one image of exact
        assert abs(counts["val"][c] - 0.2 * train[c]) <= 1


# ----------------------------------------------------------------------------- the on-disk data path


def _decoded_before(path: Path, size: int) -> np.ndarray:
    """The decode every cache held before the on-disk store: open, RGB, bilinear resize."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


@pytest.mark.parametrize("workers", [1, 2])
def test_store_gives_the_same_pixels_and_split_as_before(tmp_path, class_folders, image_file, workers):
    # JPEGs larger and smaller than the target, other modes, and a truncated file that must be dropped.
    root = class_folders(tmp_path / "flat", classes=("a", "b", "c"), n=9, size=(40, 30), fmt="jpeg", pattern="noise")
    image_file(root / "b" / "grey.png", mode="L")
    image_file(root / "c" / "rgba.png", mode="RGBA", size=(50, 64))
    good = (root / "a" / "00.jpg").read_bytes()
    (root / "a" / "broken.jpg").write_bytes(good[: len(good) // 2])
    data = load_study_data(root, 16, cache_dir=tmp_path / "cache", workers=workers, seed=3)

    paths = [r.path for r in data.manifest.records]
    assert "a/broken.jpg" not in paths and len(paths) == 29
    before = np.stack([_decoded_before(root / p, 16) for p in paths])
    assert isinstance(data.images, ImageStore) and data.images.shape == before.shape
    assert np.array_equal(np.asarray(data.images), before)
    # the split is the one make_split gives, and each part is index arrays into the store
    assert np.array_equal(data.split, make_split(data.manifest, 0.2, 0.2, seed=3))
    for name in ("train", "val", "test"):
        x, y = data.arrays(name)
        idx = np.flatnonzero(data.split == name)
        assert isinstance(x, ImageStore) and np.array_equal(x.rows, idx)  # a view: nothing read yet
        assert np.array_equal(np.asarray(x), before[idx]) and np.array_equal(y, data.labels[idx])
        order = np.random.default_rng(0).permutation(len(x))[:5]
        assert np.array_equal(x[order], before[idx][order])  # a shuffled batch, gathered in its order
    # the cache is a plain .npy that NumPy memory-maps
    (npy,) = (tmp_path / "cache").glob("decoded-*.npy")
    assert np.array_equal(np.load(npy, mmap_mode="r"), before)


@pytest.mark.parametrize("start", ["own choice", "forkserver"])  # forkserver: a process running a framework
def test_pool_and_single_process_write_the_same_cache(tmp_path, class_folders, monkeypatch, start):
    if start != "own choice":
        monkeypatch.setattr(decode_mod, "_pool_context", lambda: multiprocessing.get_context(start))
    root = class_folders(tmp_path / "flat", n=12, size=(20, 28), fmt="jpeg", pattern="noise")
    one = load_study_data(root, 12, cache_dir=tmp_path / "c1", workers=1)
    two = load_study_data(root, 12, cache_dir=tmp_path / "c2", workers=2)
    assert one.data_key == two.data_key
    ((f1,), (f2,)) = (tmp_path / "c1").glob("decoded-*.npy"), (tmp_path / "c2").glob("decoded-*.npy")
    assert f1.name == f2.name and f1.read_bytes() == f2.read_bytes()


def test_jpeg_draft_changes_pixels_and_the_cache_key(tmp_path, class_folders):
    # 64x96 JPEGs decoded for 16 px: draft decodes them at 1/4 scale before the resize.
    root = class_folders(tmp_path / "flat", n=8, size=(64, 96), fmt="jpeg", pattern="noise")
    plain = load_study_data(root, 16, cache_dir=tmp_path / "c")
    draft = load_study_data(root, 16, cache_dir=tmp_path / "c", jpeg_draft=True)
    assert draft.data_key != plain.data_key
    assert decode_key(plain.manifest, 16, jpeg_draft=True) != decode_key(plain.manifest, 16)
    assert len(list((tmp_path / "c").glob("decoded-*.npy"))) == 2
    assert not np.array_equal(np.asarray(draft.images), np.asarray(plain.images))
    # an image not twice the target on both sides is decoded at full scale: the same pixels
    small = load_study_data(root, 40, cache_dir=tmp_path / "c", jpeg_draft=True)
    before = [_decoded_before(root / r.path, 40) for r in small.manifest.records]
    assert np.array_equal(np.asarray(small.images), np.stack(before))
