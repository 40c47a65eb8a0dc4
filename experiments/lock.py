"""One writer per output folder: a run holds a lock on its ``--out`` for its whole life.

The lock is an operating-system file lock (``filelock``: ``flock`` on Unix, ``LockFileEx``
on Windows) on ``<out>/.study.lock``, so the system drops it when the process ends, however it
ends: a run killed with ``kill -9`` does not block the next one. Beside it, ``.study.pid``
names the holder, so a second run on the same folder stops at once with one line that says
which process holds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from common.errors import StudyError

LOCK_NAME = ".study.lock"
PID_NAME = ".study.pid"


class OutputFolderBusyError(StudyError):
    """Another run holds the output folder."""


def holder(out: Path) -> str:
    """The PID recorded by the run that holds (or last held) ``out``'s lock, or "unknown"."""
    try:
        return (out / PID_NAME).read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def hold_output_folder(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the block (``out`` must exist).

    Raises:
        OutputFolderBusyError: another live run holds it (no waiting).
    """
    lock = FileLock(str(out / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputFolderBusyError(
            f"another study (PID {holder(out)}) is writing to {out}; wait for it to finish or choose another --out"
        ) from None
    try:
        (out / PID_NAME).write_text(f"{os.getpid()}\n", encoding="utf-8")
        yield
    finally:
        lock.release()
