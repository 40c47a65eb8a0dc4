"""Run one arm's stages (train, predict, explain) in a process of its own.

Started for each unit (:mod:`experiments.units`) as
``python -m experiments.arm_worker --out OUT --arm KEY --spec JSON [--seed S]``;
``--spec`` is the arm's registry entry as the runner holds it (so an arm registered at run
time, such as a test's fake one, runs here too). It reads the resolved ``OUT/config.yaml``,
so it computes exactly what the runner asked; ``--seed`` picks one training seed of a seed sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from common import registry
from common.config import load_config
from common.errors import StudyError
from common.io import write_json_atomic
from experiments.pipeline import ArmStages, unit_config, unit_seed, worker_log_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="the study's output folder (holds config.yaml)")
    p.add_argument("--arm", required=True, help="the arm's key in common.registry.ARMS")
    p.add_argument("--spec", help="the arm's registry entry as JSON (default: the registered one)")
    p.add_argument("--seed", type=int, help="the training seed of a seed sweep to run (default: a single-seed study)")
    p.add_argument("--force", action="store_true", help="rerun stages even when their inputs are unchanged")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.spec:
        registry.register_arm(registry.ArmSpec.from_json(json.loads(args.spec)))
    spec = registry.arm_spec(args.arm)
    try:
        cfg = load_config(args.out / "config.yaml")
        if args.seed is not None:
            cfg = unit_config(cfg, args.seed)
        records = ArmStages(cfg, args.out, spec, args.force).run()
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json_atomic(worker_log_path(args.out, spec, unit_seed(cfg)), [dataclasses.asdict(r) for r in records])
    return 0


if __name__ == "__main__":
    sys.exit(main())
