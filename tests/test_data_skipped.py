"""Every file a real data folder holds: whatever the image decoder raises on a file, a file that
cannot be read, and an image over the pixel limit are skipped, listed once with the reason, and
the study goes on with the rest. Every bad file is built here, beside good images."""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import common.data.decode as decode_mod
from common.config import DataConfig
from common.data.dataset import load_study_data
from common.data.decode import decode_all
from common.data.discover import discover
from common.data.limits import DEFAULT_MAX_IMAGE_PIXELS
from common.io import read_json
from experiments.run_all import main

LIMIT = 2000  # the tests' pixel limit: above the good 32x32 images (1,024 pixels)

# ----------------------------------------------------------------------------- the files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ihdr(width: int, height: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))  # 8-bit RGB


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` and holds no pixels: small on disk, Pillow reads its size."""
    return PNG_SIGNATURE + _ihdr(width, height) + _chunk(b"IEND", b"")


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_in_two_chunks(arr: np.ndarray, second: bytes = b"IDAT", flip: bool = False) -> bytes:
    """A PNG whose compressed pixels lie in two chunks; ``second``: the second chunk's type (a
    broken one makes Pillow raise SyntaxError while decoding), ``flip``: the compressed bytes
    inverted (a broken data stream: OSError while decoding)."""
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)  # filter type 0 per row
    z = zlib.compress(raw)
    if flip:
        z = z[:2] + bytes(b ^ 0xFF for b in z[2:])
    half = len(z) // 2
    height, width = arr.shape[:2]
    body = _chunk(b"IDAT", z[:half]) + _chunk(second, z[half:])
    return PNG_SIGNATURE + _ihdr(width, height) + body + _chunk(b"IEND", b"")


def _bad_header_crc() -> bytes:
    good = _encoded(_noise(16, 16), "PNG")
    end = good.index(b"IHDR") + 4 + 13  # the IHDR's checksum follows its 13 bytes
    return good[:end] + bytes(4) + good[end + 4 :]


def _truncated(fmt: str) -> bytes:
    """An image cut in the middle of its pixels (its header whole): OSError while decoding."""
    data = _encoded(_noise(40, 40, 1), fmt)  # 1,600 pixels: under the tests' limit
    return data[: len(data) // 2]


def _over(limit: int) -> str:
    return f"over the limit of {limit:,} (--max-image-pixels)"


# path -> (the file's bytes, the start of its reason), with the tests' LIMIT
BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    # refused when opened (the header)
    "train/ants/notes.png": (lambda: b"some notes, not pixels\n" * 4, "not an image"),
    "train/bees/header.png": (_bad_header_crc, "corrupt image: header unreadable"),
    "train/wasps/bomb.png": (
        lambda: _png_header(100_000, 100_000),
        f"image too large: DecompressionBombError: 10,000,000,000 pixels, {_over(LIMIT)}",
    ),
    "test/bees/huge.png": (  # over twice the limit: Pillow's own limit, set from the setting, refuses it
        lambda: _encoded(_noise(100, 100), "PNG"),
        f"image too large: DecompressionBombError: 10,000 pixels, {_over(LIMIT)}",
    ),
    "test/ants/big.png": (  # over the limit, under twice it: Pillow would only warn; the study's check skips it
        lambda: _encoded(_noise(48, 48), "PNG"),
        f"image too large: 48x48 = 2,304 pixels, {_over(LIMIT)}",
    ),
    "train/ants/odd-open.img": (lambda: b"BOOMOPEN" + bytes(32), "corrupt image: ZeroDivisionError: a bug at open"),
    # refused when decoded (the pixels)
    "train/ants/truncated.jpg": (lambda: _truncated("JPEG"), "corrupt image: OSError: image file is truncated"),
    "train/bees/truncated.png": (lambda: _truncated("PNG"), "corrupt image: OSError: image file is truncated"),
    "train/wasps/stream.png": (
        lambda: _png_in_two_chunks(_noise(32, 32), flip=True),
        "corrupt image: OSError: broken data stream when reading image file",
    ),
    "test/wasps/chunk.png": (
        lambda: _png_in_two_chunks(_noise(32, 32), second=b"\x01\x02\x03\x04"),
        "corrupt image: SyntaxError: broken PNG file (chunk b'\\x01\\x02\\x03\\x04')",
    ),
    "test/ants/odd-load.img": (lambda: b"BOOMLOAD" + bytes(32), "corrupt image: MemoryError: no memory for pixels"),
}


class _BoomImageFile(ImageFile.ImageFile):
    """An image format whose plugin fails with errors the study's code names nowhere:
    ZeroDivisionError when a file is opened, MemoryError when its pixels are decoded."""

    format = "BOOM"
    format_description = "a test format"

    def _open(self) -> None:
        if self.fp.read(8) == b"BOOMOPEN":
            raise ZeroDivisionError("a bug at open")
        self._size = (8, 8)
        self._mode = "RGB"

    def load(self):
        raise MemoryError("no memory for pixels")


@pytest.fixture
def boom_plugin(monkeypatch):
    """Pillow opens files starting with b"BOOM" with :class:`_BoomImageFile` (in this process)."""
    Image.init()  # every plugin registered first, so the patched list is the whole list plus this one
    monkeypatch.setattr(Image, "ID", [*Image.ID, "BOOM"])
    monkeypatch.setitem(Image.OPEN, "BOOM", (_BoomImageFile, lambda prefix: prefix.startswith(b"BOOM")))


def _good_folder(split_folders, root: Path) -> tuple[Path, list[str]]:
    """Split folders of 32x32 PNGs (3 classes, 6 train and 3 test each) and their paths."""
    root = split_folders(root, n_train=6, n_test=3)
    return root, sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def _write(root: Path, paths) -> None:
    for rel in paths:
        (root / rel).write_bytes(BAD[rel][0]())


def _assert_listed_once(rows: list[tuple[str, str]], where: str) -> None:
    assert [path for path, _ in rows] == sorted(BAD), where  # each bad file once, nothing else
    for path, reason in rows:
        assert reason.startswith(BAD[path][1]), (where, path, reason)


# ----------------------------------------------------------------------------- the tests


def test_dry_run_skips_every_unusable_file_once_with_why_and_uses_the_rest(
    tmp_path, split_folders, boom_plugin, capsys, caplog, recwarn
):
    root, good = _good_folder(split_folders, tmp_path / "ds")
    _write(root, BAD)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    caplog.set_level(logging.WARNING)
    out = tmp_path / "out"
    flags = ["--image-size", "32", "--max-image-pixels", str(LIMIT), "--cache-dir", str(tmp_path / "cache")]
    assert main(["--data", str(root), "--out", str(out), "--dry-run", *flags]) == 0

    with open(out / "split.csv", newline="") as fh:
        assert sorted(row["path"] for row in csv.DictReader(fh)) == good  # every good image used
    with open(out / "skipped.csv", newline="") as fh:
        _assert_listed_once([(row["path"], row["reason"]) for row in csv.DictReader(fh)], "skipped.csv")
    summary = read_json(out / "data" / "dataset.json")
    _assert_listed_once([(s["path"], s["reason"]) for s in summary["skipped"]], "dataset.json")
    printed = capsys.readouterr().out.splitlines()
    start = printed.index(f"skipped files: {len(BAD)}")
    listed = printed[start + 1 : start + 1 + len(BAD)]
    _assert_listed_once([tuple(line.strip().split(": ", 1)) for line in listed], "print")
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert f"skipped {len(BAD)} file(s)" in warning
    for path, (_, reason) in BAD.items():
        assert warning.count(path) == 1 and f"{path} ({reason}" in warning
    # Pillow's warning between once and twice the limit never reaches the user, and its limit is restored
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


@pytest.mark.parametrize("bad", list(BAD))
def test_each_kind_alone_beside_good_images(tmp_path, split_folders, boom_plugin, bad):
    root, good = _good_folder(split_folders, tmp_path / "ds")
    _write(root, [bad])
    data = load_study_data(root, 16, cache_dir=tmp_path / "cache", max_image_pixels=LIMIT)
    assert [r.path for r in data.manifest.records] == good and len(data.images) == len(good)
    ((path, reason),) = [(s.path, s.reason) for s in data.manifest.skipped]
    assert path == bad and reason.startswith(BAD[bad][1]), reason


def test_the_default_limit_is_checked_on_the_header_before_any_pixel_is_decoded(
    tmp_path, class_folders, monkeypatch, recwarn
):
    # 8192x8192 = 67,108,864 pixels; files that only claim a size: nothing here could be decoded
    assert DEFAULT_MAX_IMAGE_PIXELS == DataConfig().max_image_pixels == 8192 * 8192
    root = class_folders(tmp_path / "flat", n=6)
    for name, (width, height) in {"at.png": (8192, 8192), "over.png": (9000, 9000), "bomb.png": (10**5, 10**5)}.items():
        (root / "ants" / name).write_bytes(_png_header(width, height))
    m = discover(root)
    skipped = {s.path: s.reason for s in m.skipped}
    assert "ants/at.png" in {r.path for r in m.records}  # at the limit: used
    assert skipped == {
        "ants/over.png": f"image too large: 9000x9000 = 81,000,000 pixels, {_over(DEFAULT_MAX_IMAGE_PIXELS)}",
        "ants/bomb.png": (
            f"image too large: DecompressionBombError: 10,000,000,000 pixels, {_over(DEFAULT_MAX_IMAGE_PIXELS)}"
        ),
    }
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    # with the test's limit the decoder never sees an image over it: discovery skipped it
    (root / "ants" / "at.png").unlink()
    (root / "bees" / "big.png").write_bytes(_encoded(_noise(48, 48), "PNG"))
    decoded = []
    real = decode_mod.decode_image
    monkeypatch.setattr(decode_mod, "decode_image", lambda img, *a: decoded.append(img.size) or real(img, *a))
    data = load_study_data(root, 16, cache_dir=tmp_path / "cache", max_image_pixels=LIMIT)
    assert "bees/big.png" in {s.path for s in data.manifest.skipped} and (48, 48) not in decoded
    assert len(decoded) == len(data.labels) == 18


@pytest.mark.parametrize("start", ["fork", "forkserver"])  # forkserver: Pillow's limit is set in the worker
def test_the_decoding_pool_skips_them_with_the_limit_set_in_each_worker(tmp_path, class_folders, monkeypatch, start):
    monkeypatch.setattr(decode_mod, "_pool_context", lambda: multiprocessing.get_context(start))
    root = class_folders(tmp_path / "flat", n=6)
    (root / "ants" / "truncated.png").write_bytes(_truncated("PNG"))
    (root / "bees" / "big.png").write_bytes(_encoded(_noise(48, 48), "PNG"))
    (root / "wasps" / "huge.png").write_bytes(_encoded(_noise(100, 100), "PNG"))
    # discovered under the default limit (every header is fine), decoded under the tests' limit
    manifest = discover(root)
    assert len(manifest.records) == 21
    kept, images = decode_all(manifest, 16, tmp_path / "cache", workers=2, max_image_pixels=LIMIT)
    reasons = {s.path: s.reason for s in kept.skipped}
    assert sorted(reasons) == ["ants/truncated.png", "bees/big.png", "wasps/huge.png"]
    assert reasons["ants/truncated.png"].startswith("corrupt image: OSError: image file is truncated")
    assert reasons["bees/big.png"] == BAD["test/ants/big.png"][1]  # the study's own check
    assert reasons["wasps/huge.png"] == BAD["test/bees/huge.png"][1]  # Pillow's, at the limit the worker was given
    assert len(kept.records) == len(images) == 18


def test_a_cache_decoded_under_another_limit_is_not_read(tmp_path, class_folders, monkeypatch):
    root = class_folders(tmp_path / "flat", n=6)
    (root / "ants" / "big.png").write_bytes(_encoded(_noise(48, 48), "PNG"))
    manifest = discover(root)  # the default limit: big.png is a record
    runs = []
    real = decode_mod._decode_records
    monkeypatch.setattr(decode_mod, "_decode_records", lambda m, *a: runs.append(1) or real(m, *a))
    small, _ = decode_all(manifest, 16, tmp_path / "cache", max_image_pixels=LIMIT)
    large, _ = decode_all(manifest, 16, tmp_path / "cache")
    again, _ = decode_all(manifest, 16, tmp_path / "cache", max_image_pixels=LIMIT)
    assert len(runs) == 2  # the third call read the first one's cache
    assert [s.path for s in small.skipped] == [s.path for s in again.skipped] == ["ants/big.png"]
    assert large.skipped == () and len(large.records) == 19
    limits = sorted(read_json(p)["max_image_pixels"] for p in (tmp_path / "cache").glob("decoded-*.json"))
    assert limits == [LIMIT, DEFAULT_MAX_IMAGE_PIXELS]
    # the study's data key changes with the files a limit skips, not with the limit itself
    keys = [load_study_data(root, 16, cache_dir=tmp_path / "c", max_image_pixels=n).data_key for n in (2000, 2100)]
    assert keys[0] == keys[1] != load_study_data(root, 16, cache_dir=tmp_path / "c").data_key


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_files_that_cannot_be_read_are_skipped_with_why(tmp_path, split_folders, monkeypatch):
    root, good = _good_folder(split_folders, tmp_path / "ds")
    (root / "train" / "ants" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(root / "train" / "bees" / "pipe.png")  # reading it would block for ever
    os.mkfifo(root / "pipe")  # beside the class folders too
    (root / "test" / "wasps" / "locked.png").write_bytes(_encoded(_noise(32, 32), "PNG"))
    real = Path.read_bytes

    def read_bytes(self):  # a file this user may not read (root reads every file, so it is faked)
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    data = load_study_data(root, 16, cache_dir=tmp_path / "cache")
    assert [r.path for r in data.manifest.records] == good
    assert {s.path: s.reason for s in data.manifest.skipped} == {
        "pipe": "not a regular file",
        "train/ants/gone.png": "broken link",
        "train/bees/pipe.png": "not a regular file",
        "test/wasps/locked.png": "unreadable file: PermissionError: Permission denied",
    }
