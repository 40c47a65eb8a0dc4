"""Named points where a test can stop a run hard or hold it, to prove that kills and
concurrent runs lose nothing. Inert unless a test sets one of these environment variables:

- ``STUDY_TEST_KILL_AT=<point>``: the process kills itself with SIGKILL there (as ``kill -9``
  or the out-of-memory killer would: no clean-up, no ``finally``);
- ``STUDY_TEST_WAIT_AT=<point>`` with ``STUDY_TEST_WAIT_FILE=<path>``: the process touches
  ``<path>.reached`` there and waits until ``<path>`` exists.

Points: ``data decoded`` (runner, before split.csv), ``before worker <arm key>`` (runner,
config.yaml written, the arm's process not started), ``start <stage>`` and ``written <stage>``
(an arm's stage: before it runs; after its outputs are written, before its stamp), ``fitted
<stage>`` (the train stage: trained, not yet saved), e.g. ``written train fake``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KILL_ENV = "STUDY_TEST_KILL_AT"
WAIT_ENV = "STUDY_TEST_WAIT_AT"
WAIT_FILE_ENV = "STUDY_TEST_WAIT_FILE"


def checkpoint(point: str) -> None:
    """Kill or hold this process at ``point`` when a test asks for it; otherwise nothing."""
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(WAIT_ENV) == point and os.environ.get(WAIT_FILE_ENV):
        release = Path(os.environ[WAIT_FILE_ENV])
        release.with_name(release.name + ".reached").write_text(f"{os.getpid()}\n")
        while not release.exists():
            time.sleep(0.05)
