"""Run one arm's stages (train, predict, explain, assess) in a process of its own.

Started for each unit (:mod:`experiments.units`) as ``python -m experiments.arm_worker --out OUT
--arm KEY --spec JSON --config-json JSON [--seed S]``; ``--spec`` is the arm's registry entry as
the runner holds it (so an arm registered at run time, such as a test's fake one, runs here too)
and ``--config-json`` the exact resolved config the runner asks for. The config comes from the
runner and from nowhere else (never from ``OUT/config.yaml``, which another run could rewrite),
so the worker computes exactly what its own runner asked; ``--seed`` picks one training seed of
a seed sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from common import registry
from common.config import SCALARS, SECTIONS, from_dict
from common.errors import StudyError
from common.io import write_json_atomic
from common.machine import deterministic_environment
from experiments.arm_stages import ArmStages
from experiments.assess import ArmAssessment
from experiments.keys import arm_keys
from experiments.layout import twin_config, unit_config, unit_seed, worker_log_path


def exit_with_parent(poll_seconds: float = 0.5) -> None:
    """End this process when the runner that started it dies (``kill -9`` leaves no time to
    stop its children), so no orphaned arm writes into an output folder whose lock is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(3)  # re-parented: the runner is gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="the study's output folder")
    p.add_argument("--arm", required=True, help="the arm's key in common.registry.ARMS")
    p.add_argument("--spec", help="the arm's registry entry as JSON (default: the registered one)")
    p.add_argument("--seed", type=int, help="the training seed of a seed sweep to run (default: a single-seed study)")
    p.add_argument("--config-json", required=True, help="the resolved study config (StudyConfig.to_dict()) as JSON")
    p.add_argument("--force", action="store_true", help="rerun stages even when their inputs are unchanged")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="TWIN",
        help="after the arm's own stages, a twin's (a key of common.registry.ARMS whose weights_of ran before), "
        "in this process: its framework is imported once",
    )
    args = p.parse_args(argv)
    exit_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.spec:
        registry.register_arm(registry.ArmSpec.from_json(json.loads(args.spec)))
    spec = registry.arm_spec(args.arm)
    try:
        values = json.loads(args.config_json)
        # The runner validated the whole config; this process knows the built-in arms and its
        # own, so it leaves out the sections of arms registered only in the runner.
        values = {k: v for k, v in values.items() if k in (*SCALARS, *SECTIONS) or k in registry.ARMS}
        cfg = from_dict(values)
        if cfg.deterministic:  # before the arm's framework is imported: it reads these once
            os.environ.update(deterministic_environment())
        if args.seed is not None:
            cfg = unit_config(cfg, args.seed)
        stages = ArmStages(cfg, args.out, spec, args.force, assessment=ArmAssessment)
        records = stages.run(arm_keys(cfg, stages.data.data_key, stages.selection, spec))
        write_json_atomic(worker_log_path(args.out, spec, unit_seed(cfg)), [dataclasses.asdict(r) for r in records])
        for key in args.host:  # a twin's unit, hosted: its own stages and records, in this process
            twin, tcfg = registry.arm_spec(key), twin_config(cfg)
            hosted = ArmStages(tcfg, args.out, twin, args.force, data=stages.data)
            records = hosted.run(arm_keys(tcfg, hosted.data.data_key, hosted.selection, twin))
            write_json_atomic(
                worker_log_path(args.out, twin, unit_seed(tcfg)), [dataclasses.asdict(r) for r in records]
            )
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
