"""The study as a pipeline of stages with artifacts on disk.

Stages: data and split -> per arm: train -> predict the test split -> explain (deep,
gradient) -> evaluate -> report. Every stage writes its artifacts atomically and a stamp
``stages/<stage>.json`` holding the key of its inputs; a rerun skips a stage whose key
and artifacts are unchanged. So an interrupted study resumes where it stopped, and
changing only ``n_explain`` retrains nothing.

Each arm runs in its own process (``python -m experiments.arm_worker``), so TensorFlow
and PyTorch never share an interpreter, memory or a GPU. This module imports neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from common.config import StudyConfig
from common.data import StudyData, dataset_summary, load_study_data, select_stratified, write_split_csv
from common.errors import StudyError
from common.io import read_json, stable_key, write_json_atomic, write_npz_atomic, write_text_atomic

log = logging.getLogger("study")

REPO_ROOT = Path(__file__).resolve().parents[1]
ARM_NAMES = {"pytorch": "pytorch_cnn", "keras": "keras_resnet50"}  # framework -> metrics.json key
ARM_TITLES = {"pytorch": "PyTorch CNN", "keras": "Keras ResNet50"}
PIPELINE_VERSION = 1  # bump when a stage's output changes meaning
ARM_PACKAGES = {"pytorch": "pytorch_impl", "keras": "keras_impl"}
SHARED_ARM_SOURCES = ("common/arm.py", "common/seeding.py")  # the interface and seeding both arms use


def code_digest(framework: str, root: Path = REPO_ROOT) -> str:
    """A digest of the source an arm's trained model and attributions come from: every
    ``.py`` file of its package and the shared interface. Part of the train key, so
    changed arm code retrains (and re-predicts, re-explains) instead of reusing results
    of the old code."""
    files = sorted((root / ARM_PACKAGES[framework]).glob("*.py")) + [root / rel for rel in SHARED_ARM_SOURCES]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- stages


@dataclass
class StageRecord:
    stage: str
    status: str  # "ran" or "cached"
    seconds: float


class Stages:
    """Runs stages, skipping those whose stamp holds the same key, and logs each one."""

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

    def run(self, stage: str, key: str, outputs: list[Path], fn: Callable[[], Any]) -> StageRecord:
        if self.is_current(stage, key, outputs):
            rec = StageRecord(stage, "cached", float(read_json(self.stamp_path(stage)).get("seconds", 0.0)))
            log.info("[stage] %-24s cached (key %s)", stage, key)
        else:
            t0 = time.perf_counter()
            fn()
            rec = StageRecord(stage, "ran", time.perf_counter() - t0)
            write_json_atomic(self.stamp_path(stage), {"stage": stage, "key": key, "seconds": rec.seconds,
                                                       "outputs": [p.name for p in outputs]})
            log.info("[stage] %-24s ran in %.1f s", stage, rec.seconds)
        self.records.append(rec)
        return rec


# ----------------------------------------------------------------------------- keys and paths


def prepare_data(cfg: StudyConfig) -> StudyData:
    d = cfg.data
    return load_study_data(d.root, d.image_size, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                           seed=cfg.seed, cache_dir=d.cache_dir)


def default_out(data_name: str) -> Path:
    return REPO_ROOT / "reports" / data_name


@dataclass(frozen=True)
class Selection:
    """The explained test images and the background training images, shared by all four runs."""

    explain_idx: np.ndarray  # positions in the test split
    background_idx: np.ndarray  # positions in the train split
    key: str


def make_selection(cfg: StudyConfig, data: StudyData) -> Selection:
    _, y_test = data.arrays("test")
    _, y_train = data.arrays("train")
    n_explain = cfg.explain.n_explain or 2 * len(data.classes)
    explain_idx = select_stratified(y_test, n_explain, cfg.seed)
    background_idx = select_stratified(y_train, cfg.explain.n_background, cfg.seed + 1)
    return Selection(explain_idx, background_idx,
                     stable_key(data.data_key, explain_idx.tolist(), background_idx.tolist()))


def arm_dir(out: Path, framework: str) -> Path:
    return out / ARM_NAMES[framework]


def arm_keys(cfg: StudyConfig, data: StudyData, selection: Selection, framework: str) -> dict[str, str]:
    """The input key of each of an arm's stages."""
    section = dataclasses.asdict(getattr(cfg, framework))
    section.pop("device", None)  # where it runs does not change what it should compute
    train = stable_key(PIPELINE_VERSION, "train", framework, code_digest(framework), data.data_key, cfg.seed, section)
    keys = {"train": train, "predict": stable_key("predict", train)}
    for method in cfg.explain.methods:
        keys[f"explain_{method}"] = stable_key(
            "explain", method, train, selection.key, cfg.explain.output, cfg.seed,
            cfg.explain.nsamples if method == "gradient" else None)
    return keys


def arm_outputs(out: Path, framework: str, model_filename: str) -> dict[str, list[Path]]:
    d = arm_dir(out, framework)
    return {
        "train": [d / model_filename, d / "train.json"],
        "predict": [d / "predictions.npz"],
        "explain_deep": [d / "attributions_deep.npz"],
        "explain_gradient": [d / "attributions_gradient.npz"],
    }


MODEL_FILENAMES = {"pytorch": "model.pt", "keras": "model.keras"}


def stage_name(framework: str, step: str) -> str:
    return f"{step} {framework}"


# ----------------------------------------------------------------------------- one arm (in its own process)


def run_arm(cfg: StudyConfig, out: Path, framework: str, force: bool = False) -> list[StageRecord]:
    """Train, predict and explain one arm; called inside the arm's own process."""
    from common.arm import TrainingData, arm_class
    from common.seeding import seed_everything

    data = prepare_data(cfg)
    expected = read_json(out / "data" / "dataset.json")["data_key"]
    if data.data_key != expected:
        raise RuntimeError(f"data changed since the data stage ({data.data_key} != {expected}); rerun the study")
    selection = make_selection(cfg, data)
    cls = arm_class(framework)
    keys = arm_keys(cfg, data, selection, framework)
    outputs = arm_outputs(out, framework, cls.model_filename)
    stages = Stages(out, force)
    d = arm_dir(out, framework)
    model_path = d / cls.model_filename
    arm = None

    def train():
        nonlocal arm
        seed_everything(cfg.seed)
        (x_tr, y_tr), (x_va, y_va) = data.arrays("train"), data.arrays("val")
        arm = cls.create(cfg, len(data.classes), data.image_size)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
        from common.data import default_cache_dir
        result = arm.fit(TrainingData(x_tr, y_tr, x_va, y_va, data.data_key, cache_dir or default_cache_dir()))
        arm.save(model_path)
        write_json_atomic(d / "train.json", {"history": result.history, "best_val_epoch": result.best_val_epoch,
                                             "train_seconds": result.train_seconds,
                                             "info": {**arm.info(), **result.info}})

    def loaded():
        nonlocal arm
        if arm is None:
            arm = cls.load(model_path, cfg)
        return arm

    def predict():
        x_test, _ = data.arrays("test")
        t0 = time.perf_counter()
        proba = loaded().predict_proba(x_test)
        write_npz_atomic(d / "predictions.npz", probabilities=proba.astype(np.float32),
                         seconds=np.array(time.perf_counter() - t0))

    def explain(method: str):
        x_test, _ = data.arrays("test")
        x_train, _ = data.arrays("train")
        seed_everything(cfg.seed)
        result = loaded().explain(x_test[selection.explain_idx], x_train[selection.background_idx], method,
                                  nsamples=cfg.explain.nsamples, seed=cfg.seed, output=cfg.explain.output)
        result.save(d / f"attributions_{method}.npz")

    stages.run(stage_name(framework, "train"), keys["train"], outputs["train"], train)
    stages.run(stage_name(framework, "predict"), keys["predict"], outputs["predict"], predict)
    for method in cfg.explain.methods:
        stages.run(stage_name(framework, f"explain_{method}"), keys[f"explain_{method}"],
                   outputs[f"explain_{method}"], lambda m=method: explain(m))
    return stages.records


# ----------------------------------------------------------------------------- the whole study


def worker_log_path(out: Path, framework: str) -> Path:
    return out / "stages" / f"worker_{framework}.json"


def frameworks(cfg: StudyConfig) -> list[str]:
    return [cfg.only] if cfg.only else ["pytorch", "keras"]


def data_stage(cfg: StudyConfig) -> tuple[Path, StudyData, StageRecord]:
    """Validate, decode and split the data, then write split.csv and the data summary.

    Raises:
        StudyError: for a user's mistake (bad data, bad config); nothing is written then.
    """
    t0 = time.perf_counter()
    data = prepare_data(cfg)  # validates the data set before anything is written
    out = Path(cfg.out) if cfg.out else default_out(data.manifest.name)
    out.mkdir(parents=True, exist_ok=True)
    write_split_csv(out / "split.csv", data)
    write_json_atomic(out / "data" / "dataset.json", dataset_summary(data))
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    record = StageRecord("data", "ran", time.perf_counter() - t0)
    log.info("[stage] %-24s ran in %.1f s (%d images, %d classes, %d skipped files)", "data",
             record.seconds, len(data.labels), len(data.classes), len(data.manifest.skipped))
    return out, data, record


def run_study(cfg: StudyConfig, *, force: bool = False) -> Path:
    """Run the whole study and return the output folder.

    Raises:
        StudyError: for a user's mistake (bad data, bad config); no report is written then.
    """
    out, data, data_record = data_stage(cfg)
    records = [data_record]
    selection = make_selection(cfg, data)
    write_npz_atomic(out / "data" / "selection.npz", explain_idx=selection.explain_idx,
                     background_idx=selection.background_idx)

    stages = Stages(out, force)
    for fw in frameworks(cfg):
        keys = arm_keys(cfg, data, selection, fw)
        outputs = arm_outputs(out, fw, MODEL_FILENAMES[fw])
        steps = ["train", "predict"] + [f"explain_{m}" for m in cfg.explain.methods]
        if all(stages.is_current(stage_name(fw, s), keys[s], outputs[s]) for s in steps):
            for s in steps:  # nothing to do: don't even start the framework's process
                stages.run(stage_name(fw, s), keys[s], outputs[s], lambda: None)
        else:
            _run_worker(cfg, out, fw, force)
            stages.records += [StageRecord(**r) for r in read_json(worker_log_path(out, fw))]
    records += stages.records

    from common.report import build_figures, write_reports

    t0 = time.perf_counter()
    metrics, explanations = evaluate(cfg, out, data, selection)
    records.append(StageRecord("evaluate", "ran", time.perf_counter() - t0))
    log.info("[stage] %-24s ran in %.1f s", "evaluate", records[-1].seconds)
    t0 = time.perf_counter()
    x_test, y_test = data.arrays("test")
    figures = build_figures(out, metrics, x_test[selection.explain_idx], y_test[selection.explain_idx],
                            list(data.classes), explanations)
    metrics["stages"] = [dataclasses.asdict(r) for r in records]
    write_json_atomic(out / "metrics.json", metrics)
    write_reports(out, metrics, figures)
    log.info("[stage] %-24s ran in %.1f s", "report", time.perf_counter() - t0)
    return out


def _run_worker(cfg: StudyConfig, out: Path, framework: str, force: bool) -> None:
    """Run one arm's stages in a fresh interpreter; its exit status 2 is a user's mistake."""
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    cmd = [sys.executable, "-m", "experiments.arm_worker", "--out", str(out), "--framework", framework]
    if force:
        cmd.append("--force")
    log.info("starting the %s arm in its own process", ARM_TITLES[framework])
    # Same working directory as the runner, so relative paths in the config mean the same.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, env=env)
    if proc.returncode == 2:
        raise StudyError(f"the {ARM_TITLES[framework]} arm stopped (see its message above)")
    if proc.returncode != 0:
        raise RuntimeError(f"the {ARM_TITLES[framework]} arm failed with exit status {proc.returncode}")


# ----------------------------------------------------------------------------- evaluation


def evaluate(cfg: StudyConfig, out: Path, data: StudyData, selection: Selection) -> tuple[dict, dict]:
    """Build metrics.json's content from the arms' saved artifacts only."""
    from common.arm import Explanation
    from common.attribution import agreement
    from common.evaluation import classification_summary, mcnemar_exact

    _, y_test = data.arrays("test")
    classes = list(data.classes)
    metrics: dict[str, Any] = {"dataset": dataset_summary(data), "config": cfg.to_dict(), "versions": versions(),
                               "models": {}, "attributions": {}, "fallbacks": []}
    preds, explanations = {}, {}
    for fw in frameworks(cfg):
        d = arm_dir(out, fw)
        train = read_json(d / "train.json")
        with np.load(d / "predictions.npz") as z:
            proba, predict_seconds = z["probabilities"], float(z["seconds"])
        preds[fw] = proba.argmax(1)
        model = {**classification_summary(y_test, preds[fw], classes), "history": train["history"],
                 "best_val_epoch": train["best_val_epoch"], "train_seconds": train["train_seconds"],
                 "predict_seconds": predict_seconds, "info": train["info"]}
        if fw == "keras":
            model["backbone_weights"] = train["info"].get("backbone_weights", "unknown")
            if str(model["backbone_weights"]).startswith("random"):
                metrics["fallbacks"].append(
                    f"Keras ResNet50 backbone weights: {model['backbone_weights']} — this run is not transfer "
                    "learning, so its accuracy says nothing about the published ImageNet result.")
        if fw == "pytorch" and cfg.pytorch.device == "cuda" and train["info"].get("device", "").startswith("cpu"):
            metrics["fallbacks"].append("PyTorch arm: CUDA was requested but not available; it ran on the CPU.")
        metrics["models"][ARM_NAMES[fw]] = model
        metrics["attributions"][ARM_NAMES[fw]] = {}
        for method in cfg.explain.methods:
            e = Explanation.load(d / f"attributions_{method}.npz")
            explanations[(fw, method)] = e
            entry = {"seconds": e.seconds, "n_images": int(e.attributions.shape[0]), "n_background": e.n_background,
                     "n_classes_explained": int(e.attributions.shape[1]), "output": e.output,
                     "additivity_max_abs_error": e.additivity_max_abs_error}
            if method == "gradient":
                entry["nsamples"] = e.nsamples
                entry["additivity_note"] = "Gradient SHAP is additive only in expectation; shown for reference"
            metrics["attributions"][ARM_NAMES[fw]][method] = entry
    if cfg.explain.output != "logits":
        metrics["fallbacks"].append(
            f"Explained quantity: {cfg.explain.output} instead of logits; shap's Deep SHAP treats softmax "
            "differently in PyTorch and TensorFlow, so cross-framework map differences may come from the library.")
    if len(preds) == 2:
        c = mcnemar_exact(y_test, preds["pytorch"], preds["keras"])
        metrics["comparison"] = {"mcnemar_p": c["mcnemar_p"], "only_pytorch_correct": c["only_a_correct"],
                                 "only_keras_correct": c["only_b_correct"], "both_correct": c["both_correct"],
                                 "both_wrong": c["both_wrong"], "n": c["n"]}
    maps = {f"{fw}_{m}": e.attributions for (fw, m), e in explanations.items()}
    if len(maps) >= 2:
        classes_used = {f"{fw}_{m}": e.probabilities.argmax(1) for (fw, m), e in explanations.items()}
        metrics["agreement"] = agreement(maps, classes_used)
    metrics["selection"] = {"explain_test_positions": selection.explain_idx.tolist(),
                            "background_train_positions": selection.background_idx.tolist()}
    return metrics, explanations


def versions() -> dict[str, str | None]:
    def v(*names: str) -> str | None:
        for n in names:
            try:
                return importlib.metadata.version(n)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    return {"python": platform.python_version(), "torch": v("torch"), "torchvision": v("torchvision"),
            "tensorflow": v("tensorflow-cpu", "tensorflow"), "keras": v("keras"), "shap": v("shap"),
            "numpy": v("numpy"), "scikit-learn": v("scikit-learn"), "scipy": v("scipy")}
