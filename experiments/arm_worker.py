"""Run one arm's stages (train, predict, explain) in a process of its own.

Started by the runner as ``python -m experiments.arm_worker --out OUT --framework F``;
it reads the resolved ``OUT/config.yaml``, so it computes exactly what the runner asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import keras_impl  # noqa: F401  (TensorFlow's environment, before anything imports it)

from common.config import load_config
from common.errors import StudyError
from common.io import write_json_atomic
from experiments.pipeline import run_arm, worker_log_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="the study's output folder (holds config.yaml)")
    p.add_argument("--framework", required=True, choices=["pytorch", "keras"], help="which arm to run")
    p.add_argument("--force", action="store_true", help="rerun stages even when their inputs are unchanged")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        cfg = load_config(args.out / "config.yaml")
        records = run_arm(cfg, args.out, args.framework, args.force)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json_atomic(worker_log_path(args.out, args.framework), [dataclasses.asdict(r) for r in records])
    return 0


if __name__ == "__main__":
    sys.exit(main())
