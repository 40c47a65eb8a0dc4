"""Stages with artifacts on disk: run a stage unless its inputs' key and outputs are unchanged.

Every stage writes its artifacts atomically, then a stamp ``stages/<stage>.json`` holding
the key of its inputs, its seconds and each output's size and SHA-256. A rerun skips a stage
whose stamp holds the same key and whose outputs are byte for byte the ones it recorded, so
an interrupted study resumes where it stopped, and a damaged artifact (a truncated model, a
half-copied folder) is recomputed with a warning instead of being trusted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from common.io import read_json, write_json_atomic
from common.results import StageRecord
from experiments.faults import checkpoint

log = logging.getLogger("study")


def file_digest(path: Path) -> dict[str, object]:
    """An artifact's name, size in bytes and SHA-256, as its stage's stamp records it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def artifact_problem(path: Path, recorded: object) -> str | None:
    """Why ``path`` is not the artifact a stamp recorded (None: it is); cheap size check first."""
    if not path.is_file():
        return "missing"
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return "not recorded with its size and hash (written by an older version)"
    size = path.stat().st_size
    if size != recorded.get("bytes"):
        return f"{size} bytes instead of the {recorded.get('bytes')} written"
    if file_digest(path)["sha256"] != recorded["sha256"]:
        return "content differs from what was written (hash mismatch)"
    return None


class Stages:
    """Runs stages, skipping those whose stamp holds the same key, and records each one."""

    def __init__(self, out: Path, force: bool = False):
        self.out, self.force = out, force
        self.records: list[StageRecord] = []

    def stamp_path(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage.replace(' ', '_')}.json"

    def is_current(self, stage: str, key: str, outputs: list[Path], warn: bool = True) -> bool:
        """Whether ``stage`` can be reused: its stamp holds ``key`` and every output is the
        file the stamp recorded (size and hash). A damaged output is logged (``warn``) and
        the stage counts as not current, so it is recomputed."""
        stamp = self.stamp_path(stage)
        if self.force or not stamp.exists() or not all(p.exists() for p in outputs):
            return False
        try:
            record = read_json(stamp)
        except (OSError, ValueError):
            return False  # a damaged stamp: run the stage again
        if record.get("key") != key:
            return False
        recorded = {o.get("name"): o for o in record.get("outputs", []) if isinstance(o, dict)}
        for path in outputs:
            problem = artifact_problem(path, recorded.get(path.name))
            if problem:
                if warn:
                    log.warning("%s: %s; recomputing the %s stage", path, problem, stage)
                return False
        return True

    def run(self, stage: str, key: str, outputs: list[Path], fn: Callable[[], object]) -> StageRecord:
        """Run ``fn`` (which writes ``outputs``) unless the stage is current; record it either way."""
        if self.is_current(stage, key, outputs):
            rec = StageRecord(stage, "cached", float(read_json(self.stamp_path(stage)).get("seconds", 0.0)))
            log.info("[stage] %-24s cached (key %s)", stage, key)
        else:
            checkpoint(f"start {stage}")
            t0 = time.perf_counter()
            fn()
            rec = StageRecord(stage, "ran", time.perf_counter() - t0)
            checkpoint(f"written {stage}")
            write_json_atomic(
                self.stamp_path(stage),
                {"stage": stage, "key": key, "seconds": rec.seconds, "outputs": [file_digest(p) for p in outputs]},
            )
            log.info("[stage] %-24s ran in %.1f s", stage, rec.seconds)
        self.records.append(rec)
        return rec

    def add(self, record: StageRecord) -> None:
        """Record a stage that ran elsewhere (in an arm's process) or outside the stamps."""
        self.records.append(record)
