"""The study as a pipeline of stages with artifacts on disk.

Stages: data and split -> per arm: train -> predict the test split -> explain (one stage
per method) -> assess (the random-order baseline, then one stage per method and baseline
method) -> evaluate -> report. Every stage but the data stage is keyed by its inputs
(:mod:`experiments.stages`): a rerun skips a stage whose key and artifacts are unchanged,
so an interrupted study resumes where it stopped, changing only ``n_explain`` retrains
nothing, and a finished study is re-reported without recomputing anything.

Each arm runs in its own process (``python -m experiments.arm_worker``), so TensorFlow
and PyTorch never share an interpreter, memory or a GPU. This module imports neither;
it knows the arms only through :mod:`common.registry`. A run holds a lock on its output
folder from the data stage to the end (:mod:`experiments.lock`), and hands each arm's
process the exact config it must run on its command line (never through a shared file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import yaml

from common.arm import Explanation, TrainingData
from common.config import StudyConfig, selected_arms
from common.data import (
    StudyData,
    dataset_summary,
    default_cache_dir,
    load_study_data,
    select_stratified,
    write_split_csv,
)
from common.errors import ArmFailedError, StudyError
from common.io import read_json, stable_key, write_json_atomic, write_npz_atomic, write_text_atomic
from common.machine import machine_info
from common.registry import BASELINE_METHODS, ArmSpec, arm_by_name, library_versions, method_spec
from common.results import SCHEMA_VERSION, StageRecord, StudyMetrics, from_json, to_json
from experiments.faults import checkpoint
from experiments.lock import hold_output_folder
from experiments.stages import REPO_ROOT, Stages, code_digest

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
)
REPORT_SOURCES = ("common/report.py", "common/plotting.py", "common/templates")
REPORT_TEMPLATES = ("common/templates/report.md.j2", "common/templates/report.html.j2")


@dataclass
class StudyRun:
    """What a finished run returns: its folder and every stage's record, in order."""

    out: Path
    records: list[StageRecord]

    def seconds(self, stage: str) -> float | None:
        return next((r.seconds for r in self.records if r.stage == stage), None)


# ----------------------------------------------------------------------------- data, selection, layout


def prepare_data(cfg: StudyConfig) -> StudyData:
    d = cfg.data
    return load_study_data(
        d.root,
        d.image_size,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=cfg.seed,
        cache_dir=d.cache_dir,
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
    explain_idx = select_stratified(y_test, n_explain, cfg.seed)
    background_idx = select_stratified(y_train, cfg.explain.n_background, cfg.seed + 1)
    return Selection(
        explain_idx, background_idx, stable_key(data.data_key, explain_idx.tolist(), background_idx.tolist())
    )


@dataclass(frozen=True)
class ArmPaths:
    """Where one arm's artifacts live: ``<out>/<arm name>/``."""

    dir: Path
    model: Path

    @classmethod
    def of(cls, out: Path, spec: ArmSpec) -> ArmPaths:
        return cls(out / spec.name, out / spec.name / spec.model_filename)

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


def stage_name(spec: ArmSpec, step: str) -> str:
    return f"{step} {spec.key}"


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
        self.data = prepare_data(cfg)
        expected = read_json(out / "data" / "dataset.json")["data_key"]
        if self.data.data_key != expected:
            raise StudyError(
                f"the data set changed while the study ran (key {self.data.data_key} != {expected}); rerun the study"
            )
        self.selection = make_selection(cfg, self.data)
        self.keys = arm_keys(cfg, self.data, self.selection, spec)
        self.paths = ArmPaths.of(out, spec)
        self.arm_class = spec.load_arm_class()
        self._arm = None
        self._assess_inputs = None
        self._randomised: dict[str, object] = {}

    def run(self) -> list[StageRecord]:
        stages = Stages(self.out, self.force)
        for step in arm_steps(self.cfg):
            stages.run(stage_name(self.spec, step), self.keys[step], self.paths.outputs(step), self.action(step))
        return stages.records

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
        """Scope -> this arm with the scope's weights re-drawn (made once, shared by methods)."""
        for scope in self.cfg.assess.randomise:
            if scope not in self._randomised:
                self._randomised[scope] = self.arm.randomized(scope, self.cfg.seed)
        return {scope: self._randomised[scope] for scope in self.cfg.assess.randomise}

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


def worker_log_path(out: Path, spec: ArmSpec) -> Path:
    return out / "stages" / f"worker_{spec.key}.json"


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
    write_split_csv(out / "split.csv", data)
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


def run_study(cfg: StudyConfig, *, force: bool = False) -> StudyRun:
    """Run the whole study; return its folder and every stage's record.

    Raises:
        StudyError: for a user's mistake (bad data, bad config); no report is written then.
        ArmFailedError: an arm's process failed; the other arms' stages ran and are kept.
    """
    with contextlib.ExitStack() as hold:
        return _run_study(cfg, hold, force)


def _run_study(cfg: StudyConfig, hold: contextlib.ExitStack, force: bool) -> StudyRun:
    cfg, out, data, data_record = _data_stage(cfg, hold)
    stages = Stages(out, force)
    stages.add(data_record)
    selection = make_selection(cfg, data)
    write_npz_atomic(
        out / "data" / "selection.npz", explain_idx=selection.explain_idx, background_idx=selection.background_idx
    )

    arm_stage_keys, failures = {}, []
    for spec in selected_arms(cfg):
        keys = arm_keys(cfg, data, selection, spec)
        arm_stage_keys[spec.key] = keys
        try:
            run_arm(cfg, out, spec, keys, stages, force)
        except ArmFailedError as exc:  # the other arms still run; their stages are kept
            failures.append(exc)
    if failures:
        raise failures[0] if len(failures) == 1 else ArmFailedError("; ".join(str(f) for f in failures))

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

        write_json_atomic(evaluation, to_json(evaluate_study(cfg, out, data, selection)))

    stages.run("evaluate", evaluate_key, [evaluation], evaluate)

    report_key = stable_key("report", evaluate_key, code_digest([*REPORT_SOURCES, *REPORT_TEMPLATES]))
    report_outputs = [out / "metrics.json", out / "report.md", out / "report.html"]
    stages.run(
        "report",
        report_key,
        report_outputs,
        lambda: write_report(out, data, selection, read_json(evaluation), stages.records),
    )
    return StudyRun(out, stages.records)


def run_arm(cfg: StudyConfig, out: Path, spec: ArmSpec, keys: dict[str, str], stages: Stages, force: bool) -> None:
    """One arm's stages: recorded as cached when every one is current (without starting the
    framework's process), else run in the arm's own process."""
    paths = ArmPaths.of(out, spec)
    steps = arm_steps(cfg)
    if all(stages.is_current(stage_name(spec, s), keys[s], paths.outputs(s), warn=False) for s in steps):
        for s in steps:
            stages.run(stage_name(spec, s), keys[s], paths.outputs(s), lambda: None)
        return
    _run_worker(cfg, out, spec, force)
    for record in read_json(worker_log_path(out, spec)):
        stages.add(StageRecord(**record))


def arm_log_path(out: Path, spec: ArmSpec) -> Path:
    """Everything an arm's process printed in its last run."""
    return out / "logs" / f"{spec.key}.log"


def _run_worker(cfg: StudyConfig, out: Path, spec: ArmSpec, force: bool) -> None:
    """Run one arm's stages in a fresh interpreter, given the exact config on its command
    line; what it prints goes to this process's stderr and to its log file.

    Raises:
        StudyError: the arm stopped on a user's mistake (its exit status 2).
        ArmFailedError: the arm's process crashed or was killed (out of memory, a signal).
    """
    cmd = [
        sys.executable,
        "-m",
        "experiments.arm_worker",
        "--out",
        str(out),
        "--arm",
        spec.key,
        "--spec",
        json.dumps(spec.to_json()),
        "--config-json",
        json.dumps(cfg.to_dict()),
    ]
    if force:
        cmd.append("--force")
    log.info("starting the %s arm in its own process", spec.title)
    checkpoint(f"before worker {spec.key}")
    # Same working directory as the runner, so relative paths in the config mean the same.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    log_path = arm_log_path(out, spec)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # as it comes: progress bars stay live
            log_file.write(chunk)
            log_file.flush()
            if hasattr(sys.stderr, "buffer"):
                sys.stderr.buffer.write(chunk)
            else:  # a replaced stderr (a test's capture) takes text
                sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
        returncode = proc.wait()
    if returncode == 2:
        raise StudyError(f"the {spec.title} arm stopped (see its message above; log: {log_path})")
    if returncode != 0:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"failed with exit status {returncode}"
        raise ArmFailedError(
            f"the {spec.title} arm {how}; its log: {log_path}; its finished stages are kept, so a rerun "
            "resumes where it stopped"
        )


def write_report(
    out: Path, data: StudyData, selection: Selection, evaluation: dict, records: list[StageRecord]
) -> None:
    """The report stage: figures and the two reports from the evaluation and the stage
    records so far, then metrics.json, whose records end with this stage's own (which the
    reports, written before it ends, cannot show)."""
    from common.report import build_figures, write_reports  # matplotlib: only the report stage needs it

    start = time.perf_counter()
    metrics = from_json(StudyMetrics, evaluation)
    metrics.stages = list(records)
    x_test, y_test = data.arrays("test")
    explanations = {}
    for name, by_method in metrics.attributions.items():
        spec = arm_by_name(name)
        for method in by_method:
            explanations[(spec.key, method)] = Explanation.load(ArmPaths.of(out, spec).attributions(method))
    figures = build_figures(
        out, metrics, x_test[selection.explain_idx], y_test[selection.explain_idx], list(data.classes), explanations
    )
    write_reports(out, metrics, figures)
    metrics.stages.append(StageRecord("report", "ran", time.perf_counter() - start))
    write_json_atomic(out / "metrics.json", to_json(metrics))
