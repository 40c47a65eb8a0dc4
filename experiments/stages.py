"""Stages with artifacts on disk: run a stage unless its inputs' key and outputs are unchanged.

Every stage writes its artifacts atomically, then a stamp ``stages/<stage>.json`` holding
the key of its inputs and its seconds. A rerun skips a stage whose stamp holds the same
key and whose outputs exist, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from common.io import read_json, write_json_atomic
from common.results import StageRecord

log = logging.getLogger("study")

REPO_ROOT = Path(__file__).resolve().parents[1]


def code_digest(paths: Iterable[str], root: Path = REPO_ROOT) -> str:
    """A digest of source files (paths relative to ``root``; a folder means its ``.py``
    files). Part of a stage's key, so changed code reruns the stage instead of reusing
    results of the old code."""
    files: list[Path] = []
    for rel in paths:
        path = root / rel
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class Stages:
    """Runs stages, skipping those whose stamp holds the same key, and records each one."""

    def __init__(self, out: Path, force: bool = False):
        self.out, self.force = out, force
        self.records: list[StageRecord] = []

    def stamp_path(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage.replace(' ', '_')}.json"

    def is_current(self, stage: str, key: str, outputs: list[Path]) -> bool:
        stamp = self.stamp_path(stage)
        if self.force or not stamp.exists() or not all(p.exists() for p in outputs):
            return False
        return read_json(stamp).get("key") == key

    def run(self, stage: str, key: str, outputs: list[Path], fn: Callable[[], object]) -> StageRecord:
        """Run ``fn`` (which writes ``outputs``) unless the stage is current; record it either way."""
        if self.is_current(stage, key, outputs):
            rec = StageRecord(stage, "cached", float(read_json(self.stamp_path(stage)).get("seconds", 0.0)))
            log.info("[stage] %-24s cached (key %s)", stage, key)
        else:
            t0 = time.perf_counter()
            fn()
            rec = StageRecord(stage, "ran", time.perf_counter() - t0)
            write_json_atomic(
                self.stamp_path(stage),
                {"stage": stage, "key": key, "seconds": rec.seconds, "outputs": [p.name for p in outputs]},
            )
            log.info("[stage] %-24s ran in %.1f s", stage, rec.seconds)
        self.records.append(rec)
        return rec

    def add(self, record: StageRecord) -> None:
        """Record a stage that ran elsewhere (in an arm's process) or outside the stamps."""
        self.records.append(record)
