"""The study as a pipeline of stages with artifacts on disk.

Stages: data and split -> per arm: train -> predict the test split -> explain (one stage
per method) -> assess (the random-order baseline, then one stage per method and baseline
method) -> evaluate -> report. Every stage but the data stage is keyed by its inputs
(:mod:`experiments.stages`): a rerun skips a stage whose key and artifacts are unchanged,
so an interrupted study resumes where it stopped, changing only ``n_explain`` retrains
nothing, and a finished study is re-reported without recomputing anything.

Each arm runs in its own process (``python -m experiments.arm_worker``), so TensorFlow
and PyTorch never share an interpreter, memory or a GPU. A seed sweep (``seeds``) runs
every arm once per training seed on one split; each (arm, seed) pair is a unit, run one
after another or in parallel through Dask (:mod:`experiments.units`). This module imports
neither framework; it knows the arms only through :mod:`common.registry`. A run holds a lock
on its output folder from the data stage to the end (:mod:`experiments.lock`), and hands each
arm's process the exact config it must run on its command line (never through a shared file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import yaml

from common.arm import Explanation, TrainingData
from common.attribution import class_table
from common.config import StudyConfig, selected_arms
from common.data import (
    StudyData,
    dataset_summary,
    default_cache_dir,
    load_study_data,
    select_stratified,
    write_split_csv,
)
from common.errors import StudyError
from common.io import read_json, stable_key, write_json_atomic, write_npz_atomic, write_text_atomic
from common.machine import machine_info
from common.registry import BASELINE_METHODS, ArmSpec, arm_by_name, arm_spec, library_versions, method_spec
from common.results import SCHEMA_VERSION, StageRecord, StudyMetrics, from_json, to_json
from experiments.faults import checkpoint
from experiments.lock import hold_output_folder
from experiments.stages import REPO_ROOT, Stages, code_digest
from experiments.units import Execution, Unit, run_units, unit_records

log = logging.getLogger("study")

PIPELINE_VERSION = 1  # bump when a stage's output changes meaning
SHARED_ARM_SOURCES = ("common/arm.py", "common/seeding.py")  # the interface and seeding every arm uses
ASSESS_SOURCES = ("common/assess.py", "common/quality.py")
EVALUATE_SOURCES = (
    "common/evaluation.py",
    "common/attribution.py",
    "common/assess.py",
    "common/quality.py",
    "common/results.py",
    "experiments/evaluate.py",
    "experiments/seeds.py",
)
REPORT_SOURCES = ("common/report.py", "common/plotting.py", "common/seeds_report.py", "common/templates")
REPORT_TEMPLATES = (
    "common/templates/report.md.j2",
    "common/templates/report.html.j2",
    "common/templates/seeds.md.j2",
    "common/templates/seeds.html.j2",
)


@dataclass
class StudyRun:
    """What a finished run returns: its folder and every stage's record, in order."""

    out: Path
    records: list[StageRecord]

    def seconds(self, stage: str) -> float | None:
        return next((r.seconds for r in self.records if r.stage == stage), None)


# ----------------------------------------------------------------------------- data, selection, layout


def prepare_data(cfg: StudyConfig, split_csv: Path | None = None) -> StudyData:
    """The study's data: discovered, decoded (cached) and split, or with ``split_csv`` (an arm's
    process) split as the data stage wrote it."""
    d = cfg.data
    return load_study_data(
        d.root,
        d.image_size,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=cfg.data_seed,
        cache_dir=d.cache_dir,
        split_csv=split_csv,
    )


def default_out(data_name: str) -> Path:
    return REPO_ROOT / "reports" / data_name


@dataclass(frozen=True)
class Selection:
    """The explained test images and the background training images, shared by every arm."""

    explain_idx: np.ndarray  # positions in the test split
    background_idx: np.ndarray  # positions in the train split
    key: str


def make_selection(cfg: StudyConfig, data: StudyData) -> Selection:
    _, y_test = data.arrays("test")
    _, y_train = data.arrays("train")
    n_explain = cfg.explain.n_explain or 2 * len(data.classes)
    explain_idx = select_stratified(y_test, n_explain, cfg.data_seed)
    background_idx = select_stratified(y_train, cfg.explain.n_background, cfg.data_seed + 1)
    return Selection(
        explain_idx, background_idx, stable_key(data.data_key, explain_idx.tolist(), background_idx.tolist())
    )


@dataclass(frozen=True)
class ArmPaths:
    """Where one arm's artifacts live: ``<out>/<arm name>/``, or ``<out>/<arm name>/seed-<s>/``
    for training seed ``s`` of a seed sweep."""

    dir: Path
    model: Path

    @classmethod
    def of(cls, out: Path, spec: ArmSpec, seed: int | None = None) -> ArmPaths:
        folder = out / spec.name if seed is None else out / spec.name / f"seed-{seed}"
        return cls(folder, folder / spec.model_filename)

    @property
    def train_json(self) -> Path:
        return self.dir / "train.json"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.npz"

    def attributions(self, method: str) -> Path:
        return self.dir / f"attributions_{method}.npz"

    def assessment(self, what: str) -> Path:
        """The assess stage's per-image arrays: ``what`` is a method or "random"."""
        return self.dir / f"assess_{what}.npz"

    def outputs(self, step: str) -> list[Path]:
        """The artifacts of one of the arm's stages ("train", "predict", "explain_<method>",
        "assess_<method or random>")."""
        if step == "train":
            return [self.model, self.train_json]
        if step == "predict":
            return [self.predictions]
        if step.startswith("assess_"):
            return [self.assessment(step.removeprefix("assess_"))]
        return [self.attributions(step.removeprefix("explain_"))]


def assessed_methods(cfg: StudyConfig) -> list[str]:
    """The methods the assess stage measures: the explained ones, then the baselines."""
    if not cfg.assess.enabled:
        return []
    return list(cfg.explain.methods) + [m for m in BASELINE_METHODS if m not in cfg.explain.methods]


def arm_steps(cfg: StudyConfig) -> list[str]:
    steps = ["train", "predict"] + [f"explain_{m}" for m in cfg.explain.methods]
    if cfg.assess.enabled:
        steps += ["assess_random"] + [f"assess_{m}" for m in assessed_methods(cfg)]
    return steps


def stage_name(spec: ArmSpec, step: str, seed: int | None = None) -> str:
    return f"{step} {spec.key}" if seed is None else f"{step} {spec.key} seed-{seed}"


def unit_config(cfg: StudyConfig, seed: int) -> StudyConfig:
    """The config one training seed of a study runs with: ``cfg`` itself in a single-seed
    study; in a seed sweep, ``seed`` as the training seed on the sweep's split, and the
    assess stage for the first seed only (the report's quality section shows that seed)."""
    if cfg.seeds is None:
        return cfg
    if seed not in cfg.seeds:
        raise ValueError(f"seed {seed} is not one of the study's seeds {list(cfg.seeds)}")
    assess = cfg.assess if seed == cfg.seeds[0] else dataclasses.replace(cfg.assess, enabled=False)
    return dataclasses.replace(cfg, seed=seed, split_seed=cfg.data_seed, assess=assess)


def unit_seed(cfg: StudyConfig) -> int | None:
    """The seed in a unit's folder and stage names: its training seed in a sweep, None otherwise."""
    return None if cfg.seeds is None else cfg.seed


def arm_code_digest(spec: ArmSpec) -> str:
    """A digest of the source an arm's trained model and attributions come from: every
    ``.py`` file of its package and the shared interface."""
    return code_digest([spec.package.replace(".", "/"), *SHARED_ARM_SOURCES])


def arm_keys(cfg: StudyConfig, data: StudyData, selection: Selection, spec: ArmSpec) -> dict[str, str]:
    """The input key of each of an arm's stages."""
    settings = cfg.arm(spec.key)
    section = {k: v for k, v in dataclasses.asdict(settings).items() if k not in settings.placement}
    train = stable_key(PIPELINE_VERSION, "train", spec.key, arm_code_digest(spec), data.data_key, cfg.seed, section)
    if cfg.deterministic:  # other kernels, other numbers: a key of its own (unchanged keys when off)
        train = stable_key(train, "deterministic")
    keys = {"train": train, "predict": stable_key("predict", train)}
    for method in cfg.explain.methods:
        keys[f"explain_{method}"] = stable_key(
            "explain",
            method,
            train,
            selection.key,
            cfg.explain.output,
            cfg.explain.classes,
            cfg.seed,
            cfg.explain.nsamples if method_spec(method).sampled else None,
        )
    if cfg.assess.enabled:
        assess = stable_key(
            "assess", code_digest(ASSESS_SOURCES), dataclasses.asdict(cfg.assess), selection.key, cfg.seed, train
        )
        keys["assess_random"] = stable_key(assess, "random")
        for method in assessed_methods(cfg):
            keys[f"assess_{method}"] = stable_key(
                assess,
                method,
                keys.get(f"explain_{method}"),
                cfg.explain.output,
                cfg.explain.nsamples if method_spec(method).sampled else None,
            )
    return keys


# ----------------------------------------------------------------------------- one arm (in its own process)


class ArmStages:
    """One arm's stages (train, predict, explain per method); runs inside the arm's process."""

    def __init__(self, cfg: StudyConfig, out: Path, spec: ArmSpec, force: bool = False):
        self.cfg, self.out, self.spec, self.force = cfg, out, spec, force
        # The split the data stage wrote, not a new one: the same by construction, and this process
        # is spared scikit-learn's import (1.3 s), which an arm that does not explain never needs.
        # The files are listed and hashed again, so a data set changed since then is refused.
        self.data = prepare_data(cfg, split_csv=out / "split.csv")
        expected = read_json(out / "data" / "dataset.json")["data_key"]
        if self.data.data_key != expected:
            raise StudyError(
                f"the data set changed while the study ran (key {self.data.data_key} != {expected}); rerun the study"
            )
        self.selection = make_selection(cfg, self.data)
        self.keys = arm_keys(cfg, self.data, self.selection, spec)
        self.seed = unit_seed(cfg)
        self.paths = ArmPaths.of(out, spec, self.seed)
        self.arm_class = spec.load_arm_class()
        self._arm = None
        self._assess_inputs = None

    def run(self) -> list[StageRecord]:
        from experiments.plan import planned_work

        stages = Stages(self.out, self.force)
        n, b = len(self.selection.explain_idx), len(self.selection.background_idx)
        plan = {r.stage: r for r in planned_work(self.cfg, n, len(self.data.classes), b) if r.arm == self.spec.title}
        steps = arm_steps(self.cfg)
        estimated = False
        for i, step in enumerate(steps):
            record = stages.run(
                stage_name(self.spec, step, self.seed), self.keys[step], self.paths.outputs(step), self.action(step)
            )
            if not estimated and record.status == "ran" and step.startswith("explain_") and record.seconds > 0:
                estimated = True
                self._log_estimate(step, record.seconds, [plan[s] for s in steps[i + 1 :] if s in plan])
        return stages.records

    def _log_estimate(self, step: str, seconds: float, rest: list) -> None:
        """After the first explain stage: the rest of the arm's explain and assess stages at its rate."""
        spec = method_spec(step.removeprefix("explain_"))
        done = Explanation.load(self.paths.attributions(spec.key)).n_maps * spec.passes(
            1, 1, len(self.selection.background_idx), self.cfg.explain.nsamples
        )
        rate = done / seconds  # passes per second
        # a forward-only row costs about a third of a pass (forward + backward)
        low = sum(r.passes[0] + r.forward_rows / 3 for r in rest) / rate
        high = sum(r.passes[1] + r.forward_rows / 3 for r in rest) / rate
        span = f"{low:.0f} s" if round(low) == round(high) else f"{low:.0f}–{high:.0f} s"
        log.info(
            "%s: %s ran %d passes in %.1f s (%.0f/s); the remaining explain and assess stages: about %s",
            self.spec.title,
            step,
            done,
            seconds,
            rate,
            span,
        )

    def action(self, step: str) -> Callable[[], None]:
        if step == "train":
            return self.train
        if step == "predict":
            return self.predict
        if step == "assess_random":
            return self.assess_random
        if step.startswith("assess_"):
            return partial(self.assess, step.removeprefix("assess_"))
        return partial(self.explain, step.removeprefix("explain_"))

    @property
    def arm(self):
        """The trained arm: the one just trained, or the saved one."""
        if self._arm is None:
            self._arm = self.arm_class.load(self.paths.model, self.cfg)
        return self._arm

    def train(self) -> None:
        (x_tr, y_tr), (x_va, y_va) = self.data.arrays("train"), self.data.arrays("val")
        self._arm = self.arm_class.create(self.cfg, len(self.data.classes), self.data.image_size)
        cache_dir = Path(self.cfg.data.cache_dir) if self.cfg.data.cache_dir else default_cache_dir()
        result = self._arm.fit(TrainingData(x_tr, y_tr, x_va, y_va, self.data.data_key, cache_dir))
        checkpoint(f"fitted {stage_name(self.spec, 'train')}")
        self._arm.save(self.paths.model)
        write_json_atomic(
            self.paths.train_json,
            {
                "history": result.history,
                "best_val_epoch": result.best_val_epoch,
                "train_seconds": result.train_seconds,
                "info": result.info,
                "fallbacks": result.fallbacks,
                "machine": dataclasses.asdict(machine_info(self.cfg.deterministic)),
            },
        )

    def predict(self) -> None:
        x_test, _ = self.data.arrays("test")
        t0 = time.perf_counter()
        proba = self.arm.predict_proba(x_test)
        write_npz_atomic(
            self.paths.predictions, probabilities=proba.astype(np.float32), seconds=np.array(time.perf_counter() - t0)
        )

    @functools.cached_property
    def explained_classes(self) -> np.ndarray | None:
        """The classes the explain stage explains per image (``explain.classes``; None: every class),
        from the trained arm's predictions (computed once, shared by every method's stage)."""
        x_test, y_test = self.data.arrays("test")
        images = x_test[self.selection.explain_idx]
        predicted = self.arm.predict_proba(images).argmax(1)
        return class_table(self.cfg.explain.classes, predicted, y_test[self.selection.explain_idx])

    def explain(self, method: str) -> None:
        x_test, _ = self.data.arrays("test")
        x_train, _ = self.data.arrays("train")
        result = self.arm.explain(
            x_test[self.selection.explain_idx],
            x_train[self.selection.background_idx],
            method,
            nsamples=self.cfg.explain.nsamples,
            seed=self.cfg.seed,
            output=self.cfg.explain.output,
            classes=self.explained_classes,
        )
        result.save(self.paths.attributions(method))

    # -- the assess stage (common/assess.py)

    @property
    def assess_inputs(self):
        """The explained images, background, classes and baselines every assessment shares."""
        from common.assess import make_inputs

        if self._assess_inputs is None:
            x_test, _ = self.data.arrays("test")
            x_train, _ = self.data.arrays("train")
            images = x_test[self.selection.explain_idx]
            classes = self.arm.predict_proba(images).argmax(1)  # the explained class: the prediction
            self._assess_inputs = make_inputs(
                images,
                x_train[self.selection.background_idx],
                classes,
                self.arm.n_classes,
                self.cfg.assess,
                self.cfg.seed,
            )
        return self._assess_inputs

    def randomised(self) -> dict:
        """Scope -> a ``with`` block in which this arm's weights in that scope are re-drawn."""
        return {scope: partial(self.arm.randomized, scope, self.cfg.seed) for scope in self.cfg.assess.randomise}

    def assess_random(self) -> None:
        from common.assess import assess_random

        write_npz_atomic(
            self.paths.assessment("random"),
            **assess_random(self.arm, self.assess_inputs, self.cfg.assess, self.cfg.seed),
        )

    def assess(self, method: str) -> None:
        from common.assess import assess_method

        path = self.paths.attributions(method)
        explanation = Explanation.load(path) if method in self.cfg.explain.methods else None
        result = assess_method(
            self.arm,
            method,
            explanation,
            self.assess_inputs,
            self.cfg.assess,
            nsamples=self.cfg.explain.nsamples,
            seed=self.cfg.seed,
            output=self.cfg.explain.output,
            randomised=self.randomised(),
        )
        write_npz_atomic(self.paths.assessment(method), **result)


# ----------------------------------------------------------------------------- the whole study


def worker_log_path(out: Path, spec: ArmSpec, seed: int | None = None) -> Path:
    return out / "stages" / (f"worker_{spec.key}.json" if seed is None else f"worker_{spec.key}_seed-{seed}.json")


def fit_to_data(cfg: StudyConfig, data: StudyData) -> StudyConfig:
    """``cfg`` with counts larger than the data set allows lowered to what it has, with a
    warning, so config.yaml, metrics.json and the report show what was used."""
    n_test, n_train = len(data.indices("test")), len(data.indices("train"))
    explain = cfg.explain
    if explain.n_explain is not None and explain.n_explain > n_test:
        log.warning("explain.n_explain %d is more than the %d test images: explaining all", explain.n_explain, n_test)
        explain = dataclasses.replace(explain, n_explain=n_test)
    if explain.n_background > n_train:
        log.warning(
            "explain.n_background %d is more than the %d training images: using all", explain.n_background, n_train
        )
        explain = dataclasses.replace(explain, n_background=n_train)
    return cfg if explain is cfg.explain else dataclasses.replace(cfg, explain=explain)


def check_output_folder(out: Path) -> None:
    """Raise StudyError, before any work, when ``out`` or the nearest folder above it that
    exists cannot hold the run's output (a file in the way, no write permission)."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise StudyError(f"output folder {out} is a file (or lies below one); choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StudyError(f"cannot write to the output folder {out}: permission denied; choose another --out")


def output_folder(cfg: StudyConfig, data: StudyData) -> Path:
    """The run's output folder, created.

    Raises:
        StudyError: it cannot be created or written to (a file in the way, no permission).
    """
    out = Path(cfg.out).expanduser() if cfg.out else default_out(data.manifest.name)
    check_output_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StudyError(f"output folder {out} is a file (or lies below one); choose another --out") from None
    except OSError as exc:
        raise StudyError(f"cannot create the output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise StudyError(f"cannot write to the output folder {out}: permission denied; choose another --out")
    return out


def data_stage(cfg: StudyConfig) -> tuple[Path, StudyData, StageRecord]:
    """Validate, decode and split the data, then write split.csv and the data summary
    (holding the output folder's lock while writing).

    Raises:
        StudyError: for a user's mistake (bad data, bad config); nothing is written then.
    """
    with contextlib.ExitStack() as hold:
        _, out, data, record = _data_stage(cfg, hold)
    return out, data, record


def _data_stage(cfg: StudyConfig, hold: contextlib.ExitStack) -> tuple[StudyConfig, Path, StudyData, StageRecord]:
    """:func:`data_stage`, leaving the output folder's lock in ``hold``; also returns the
    config fitted to the data (:func:`fit_to_data`)."""
    t0 = time.perf_counter()
    if cfg.out:
        check_output_folder(Path(cfg.out).expanduser())  # before the data is decoded
    data = prepare_data(cfg)  # validates the data set before anything is written
    cfg = fit_to_data(cfg, data)
    out = output_folder(cfg, data)
    hold.enter_context(hold_output_folder(out))
    checkpoint("data decoded")
    write_split_csv(out / "split.csv", data.manifest, data.split)
    write_json_atomic(out / "data" / "dataset.json", to_json(dataset_summary(data)))
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    record = StageRecord("data", "ran", time.perf_counter() - t0)
    log.info(
        "[stage] %-24s ran in %.1f s (%d images, %d classes, %d skipped files)",
        "data",
        record.seconds,
        len(data.labels),
        len(data.classes),
        len(data.manifest.skipped),
    )
    return cfg, out, data, record


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
    cfg, out, data, data_record = _data_stage(cfg, hold)
    stages = Stages(out, force)
    stages.add(data_record)
    selection = make_selection(cfg, data)
    write_npz_atomic(
        out / "data" / "selection.npz", explain_idx=selection.explain_idx, background_idx=selection.background_idx
    )

    from experiments.plan import format_plan, planned_work

    n_explain, n_background = len(selection.explain_idx), len(selection.background_idx)
    plan = format_plan(planned_work(cfg, n_explain, len(data.classes), n_background), cfg.explain.classes)
    log.info("%s%s", plan, f"\n  (per training seed: {len(cfg.training_seeds)} seeds)" if cfg.seeds else "")
    arm_stage_keys, units, pending, unit_stages = {}, [], [], {}
    config = json.dumps(cfg.to_dict())  # each unit's worker gets it on its command line
    for seed in cfg.training_seeds:
        ucfg = unit_config(cfg, seed)
        for spec in selected_arms(cfg):
            keys = arm_keys(ucfg, data, selection, spec)
            unit = Unit(spec.key, spec.title, json.dumps(spec.to_json()), unit_seed(ucfg), config)
            arm_stage_keys[spec.key if unit.seed is None else f"{spec.key} seed-{unit.seed}"] = keys
            units.append(unit)
            unit_stages[unit.label] = cached_unit(ucfg, out, spec, keys, force)
            if unit_stages[unit.label] is None:
                pending.append(unit)
    run_units(out, pending, execution, force)
    for unit in units:  # every unit's stage records, in the units' order
        records = unit_stages[unit.label]
        if records is None:
            records = [StageRecord(**r) for r in read_json(worker_log_path(out, arm_spec(unit.arm), unit.seed))]
        for record in records:
            stages.add(record)

    evaluate_key = stable_key(
        PIPELINE_VERSION,
        "evaluate",
        SCHEMA_VERSION,
        code_digest(EVALUATE_SOURCES),
        cfg.to_dict(),
        library_versions(),
        selection.key,
        arm_stage_keys,
    )
    evaluation = out / "evaluation.json"

    def evaluate() -> None:
        from experiments.evaluate import evaluate_study  # it imports this module
        from experiments.seeds import evaluate_sweep

        sweep = cfg.seeds is not None
        evaluated = evaluate_sweep(cfg, out, data, selection) if sweep else evaluate_study(cfg, out, data, selection)
        write_json_atomic(evaluation, to_json(evaluated))

    stages.run("evaluate", evaluate_key, [evaluation], evaluate)

    ran_with = {**execution.describe(), "units": unit_records(out, units)}
    report_key = stable_key(
        "report", evaluate_key, code_digest([*REPORT_SOURCES, *REPORT_TEMPLATES]), execution.describe()
    )
    report_outputs = [out / "metrics.json", out / "report.md", out / "report.html"]
    stages.run(
        "report",
        report_key,
        report_outputs,
        lambda: write_report(out, data, selection, read_json(evaluation), stages.records, ran_with),
    )
    return StudyRun(out, stages.records)


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


def write_report(
    out: Path,
    data: StudyData,
    selection: Selection,
    evaluation: dict,
    records: list[StageRecord],
    execution: dict | None = None,
) -> None:
    """The report stage: figures and the two reports from the evaluation and the stage
    records so far, then metrics.json, whose records end with this stage's own (which the
    reports, written before it ends, cannot show)."""
    from common.report import build_figures, write_reports  # matplotlib: only the report stage needs it

    start = time.perf_counter()
    metrics = from_json(StudyMetrics, evaluation)
    metrics.stages = list(records)
    metrics.execution = execution
    x_test, y_test = data.arrays("test")
    explanations = {}
    first_seed = metrics.seeds.seeds[0] if metrics.seeds else None  # a sweep's figures: its first seed
    for name, by_method in metrics.attributions.items():
        spec = arm_by_name(name)
        for method in by_method:
            explanations[(spec.key, method)] = Explanation.load(ArmPaths.of(out, spec, first_seed).attributions(method))
    figures = build_figures(
        out, metrics, x_test[selection.explain_idx], y_test[selection.explain_idx], list(data.classes), explanations
    )
    write_reports(out, metrics, figures)
    metrics.stages.append(StageRecord("report", "ran", time.perf_counter() - start))
    write_json_atomic(out / "metrics.json", to_json(metrics))
