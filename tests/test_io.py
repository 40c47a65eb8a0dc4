"""Atomic writes and stable keys."""

from __future__ import annotations

import os

import numpy as np
import pytest

from common.io import atomic_path, read_json, stable_key, write_json_atomic, write_npz_atomic


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a" / "m.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert read_json(target) == {"v": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]  # no temporary left behind


def test_atomic_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_npz_atomic(tmp_path / "x.npz", a=np.arange(3))
    finally:
        os.umask(old)
    assert (tmp_path / "x.npz").stat().st_mode & 0o777 == 0o644
    with np.load(tmp_path / "x.npz") as z:
        assert z["a"].tolist() == [0, 1, 2]


def test_stable_key_ignores_dict_order_and_sees_values():
    assert stable_key({"a": 1, "b": 2}) == stable_key({"b": 2, "a": 1})
    assert stable_key({"a": 1}) != stable_key({"a": 2})
