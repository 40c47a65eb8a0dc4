"""The study as a pipeline of stages with artifacts on disk: the orchestration.

Stages: data and split (:mod:`experiments.data_stage`) -> per arm: train -> predict the test
split -> explain (one stage per method) -> assess (the random-order baseline, then one stage
per method and baseline method) -> evaluate (:mod:`experiments.evaluate`,
:mod:`experiments.sweep`) -> report (:mod:`experiments.report_stage`). Every stage but the data
stage is keyed by its inputs and code (:mod:`experiments.keys`): a rerun skips a stage whose key
and artifacts are unchanged (:mod:`experiments.stages`), so an interrupted study resumes where
it stopped, changing only ``n_explain`` retrains nothing, and a finished study is re-reported
without recomputing anything.

Each arm runs in its own process (:mod:`experiments.arm_worker`, running
:class:`experiments.arm_stages.ArmStages`), so TensorFlow and PyTorch never share an
interpreter, memory or a GPU. A seed sweep (``seeds``) runs every arm once per training seed on
one split; each (arm, seed) pair is a unit, run one after another or in parallel through Dask
(:mod:`experiments.units`). This module imports neither framework; it knows the arms only
through :mod:`common.registry`. A run holds a lock on its output folder from the data stage to
the end, and hands each arm's process the exact config it must run on its command line (never
through a shared file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from common.config import StudyConfig, selected_arms, twin_arms
from common.data.dataset import StudyData
from common.io import read_json, write_json_atomic, write_npz_atomic
from common.registry import ArmSpec, arm_spec
from common.results import StageRecord
from common.typed_json import to_json
from experiments.budget import allocate
from experiments.data_stage import run_data_stage
from experiments.evaluate import evaluate_study
from experiments.keys import arm_keys, evaluate_key, report_key
from experiments.layout import (
    ArmPaths,
    Selection,
    arm_steps,
    make_selection,
    stage_name,
    twin_config,
    unit_config,
    unit_seed,
    worker_log_path,
)
from experiments.plan import format_plan, planned_work
from experiments.report_stage import write_report
from experiments.stages import Stages
from experiments.sweep import evaluate_sweep
from experiments.units import Execution, Unit, run_units, unit_records

log = logging.getLogger("study")


@dataclass
class StudyRun:
    """What a finished run returns: its folder and every stage's record, in order."""

    out: Path
    records: list[StageRecord]

    def seconds(self, stage: str) -> float | None:
        return next((r.seconds for r in self.records if r.stage == stage), None)


def run_study(cfg: StudyConfig, *, force: bool = False, execution: Execution | None = None) -> StudyRun:
    """Run the whole study; return its folder and every stage's record.

    Each (arm, training seed) pair is a unit run by :mod:`experiments.units`: one after
    another by default, or in parallel through Dask (``execution``).

    Raises:
        StudyError: for a user's mistake (bad data, bad config); no report is written then.
        UnitsFailed: some units failed (the others finished and keep their stages); no report
            is written then.
    """
    with contextlib.ExitStack() as hold:
        return _run_study(cfg, hold, force, execution or Execution())


def _run_study(cfg: StudyConfig, hold: contextlib.ExitStack, force: bool, execution: Execution) -> StudyRun:
    cfg, out, data, data_record = run_data_stage(cfg, hold)
    stages = Stages(out, force)
    stages.add(data_record)
    selection = make_selection(cfg, data)
    write_npz_atomic(
        out / "data" / "selection.npz", explain_idx=selection.explain_idx, background_idx=selection.background_idx
    )
    n_explain, n_background = len(selection.explain_idx), len(selection.background_idx)
    plans = allocate(cfg, n_explain, len(data.classes), data.image_size) if cfg.assess.enabled else None
    plan = format_plan(planned_work(cfg, n_explain, len(data.classes), n_background, plans), cfg.explain.classes)
    log.info("%s%s", plan, f"\n  (per training seed: {len(cfg.training_seeds)} seeds)" if cfg.seeds else "")
    arm_stage_keys = _run_arms(cfg, out, data, selection, stages, force, execution)

    evaluated = evaluate_key(cfg, selection, arm_stage_keys)
    evaluation = out / "evaluation.json"

    def evaluate() -> None:
        sweep = cfg.seeds is not None
        result = evaluate_sweep(cfg, out, data, selection) if sweep else evaluate_study(cfg, out, data, selection)
        write_json_atomic(evaluation, to_json(result))

    stages.run("evaluate", evaluated, [evaluation], evaluate)
    ran_with = {**execution.describe(), "units": unit_records(out, [unit for unit, _, _ in _units(cfg)])}
    report_outputs = [out / "metrics.json", out / "report.md", out / "report.html"]
    stages.run(
        "report",
        report_key(evaluated, execution.describe()),
        report_outputs,
        lambda: write_report(out, data, selection, read_json(evaluation), stages.records, ran_with),
    )
    return StudyRun(out, stages.records)


def _units(cfg: StudyConfig) -> list[tuple[Unit, StudyConfig, ArmSpec]]:
    """Every unit of the study, in order (seed by seed, arms in registry order), with its config and
    arm; then the twins' ("Is it the framework?", the first training seed only), which run after."""
    config = json.dumps(cfg.to_dict())  # each unit's worker gets it on its command line
    units = []
    for seed in cfg.training_seeds:
        ucfg = unit_config(cfg, seed)
        for spec in selected_arms(cfg):
            units.append((Unit(spec.key, spec.title, json.dumps(spec.to_json()), unit_seed(ucfg), config), ucfg, spec))
    tcfg = twin_config(cfg)
    for spec in twin_arms(cfg):
        unit = Unit(spec.key, spec.title, json.dumps(spec.to_json()), unit_seed(tcfg), json.dumps(tcfg.to_dict()))
        units.append((unit, tcfg, spec))
    return units


def _run_arms(
    cfg: StudyConfig,
    out: Path,
    data: StudyData,
    selection: Selection,
    stages: Stages,
    force: bool,
    execution: Execution,
) -> dict[str, dict[str, str]]:
    """Run every unit whose stages are not all current (in the arms' processes), record every
    unit's stages in ``stages``, and return each unit's stage keys ("<arm key>[ seed-<s>]" -> keys)."""
    arm_stage_keys, pending, unit_stages = {}, [], {}
    units = _units(cfg)
    for unit, ucfg, spec in units:
        keys = arm_keys(ucfg, data.data_key, selection, spec)
        arm_stage_keys[spec.key if unit.seed is None else f"{spec.key} seed-{unit.seed}"] = keys
        unit_stages[unit.label] = cached_unit(ucfg, out, spec, keys, force)
        if unit_stages[unit.label] is None:
            pending.append(unit)
    first, twins = _host_twins(pending, execution)
    run_units(out, first, execution, force)
    # a twin carries the weights its source arm's unit trains: a twin no unit hosts runs once the others are done
    run_units(out, twins, execution, force)
    for unit, _, _ in units:  # every unit's stage records, in the units' order
        records = unit_stages[unit.label]
        if records is None:
            records = [StageRecord(**r) for r in read_json(worker_log_path(out, arm_spec(unit.arm), unit.seed))]
        for record in records:
            stages.add(record)
    return arm_stage_keys


def _host_twins(pending: list[Unit], execution: Execution) -> tuple[list[Unit], list[Unit]]:
    """The units to run first, and the twins' units to run after them. Run one after another,
    a pending twin is hosted by the first pending unit after its source's of the twin's framework
    and seed (:attr:`Unit.hosts`): its steps run in that process, which has imported the framework
    already (a TensorFlow start-up costs seconds)."""
    first = [u for u in pending if arm_spec(u.arm).weights_of is None]
    twins = [u for u in pending if arm_spec(u.arm).weights_of is not None]
    if not execution.sequential:
        return first, twins
    for twin in list(twins):
        spec = arm_spec(twin.arm)
        source = next((i for i, u in enumerate(first) if u.arm == spec.weights_of and u.seed == twin.seed), -1)
        host = next(
            (
                i
                for i, u in enumerate(first)
                if i > source and u.seed == twin.seed and arm_spec(u.arm).package == spec.package
            ),
            None,
        )
        if host is not None:
            first[host] = dataclasses.replace(first[host], hosts=(*first[host].hosts, twin.arm))
            twins.remove(twin)
    return first, twins


def cached_unit(cfg: StudyConfig, out: Path, spec: ArmSpec, keys: dict[str, str], force: bool) -> list | None:
    """One unit's stage records when every one of its stages is current (no process starts),
    else None: the unit must run (in the arm's own process, :mod:`experiments.units`)."""
    seed = unit_seed(cfg)
    paths = ArmPaths.of(out, spec, seed)
    steps = arm_steps(cfg)
    stages = Stages(out, force)
    if not all(stages.is_current(stage_name(spec, s, seed), keys[s], paths.outputs(s), warn=False) for s in steps):
        return None
    for s in steps:
        stages.run(stage_name(spec, s, seed), keys[s], paths.outputs(s), lambda: None)
    return stages.records
