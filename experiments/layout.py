"""What the study's stages share: its data, the explained and background images, each arm's steps
and the paths of its artefacts, and the config each training seed runs with.

Definitions only: the runner (:mod:`experiments.pipeline`), each arm's process
(:mod:`experiments.arm_stages`), the evaluate stage and the benchmarks read them from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import StudyConfig
from common.data.dataset import StudyData, load_study_data
from common.data.split import select_stratified
from common.io import stable_key
from common.registry import BASELINE_METHODS, ArmSpec

REPO_ROOT = Path(__file__).resolve().parents[1]


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
        max_image_pixels=d.max_image_pixels,
    )


def default_out(data_name: str) -> Path:
    """The output folder of a study that names none: ``reports/<data set name>`` in the checkout,
    or in the working directory when the study runs from an installed package (``shap-study``)."""
    checkout = (REPO_ROOT / "pyproject.toml").is_file()
    return (REPO_ROOT if checkout else Path.cwd()) / "reports" / data_name


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
    """An arm's steps in the order they run: train, predict, explain_<method>..., then
    assess_random and assess_<method>... when the study assesses its maps."""
    steps = ["train", "predict"] + [f"explain_{m}" for m in cfg.explain.methods]
    if cfg.assess.enabled:
        steps += ["assess_random"] + [f"assess_{m}" for m in assessed_methods(cfg)]
    return steps


def stage_name(spec: ArmSpec, step: str, seed: int | None = None) -> str:
    """The name of an arm's step as stamps, logs and metrics.json's records show it, e.g. "train pytorch seed-1"."""
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


def twin_config(cfg: StudyConfig) -> StudyConfig:
    """The config a twin's unit runs with ("Is it the framework?"): the study's first training seed,
    without the assess stage (the twin is explained, not assessed)."""
    ucfg = unit_config(cfg, cfg.training_seeds[0])
    return dataclasses.replace(ucfg, assess=dataclasses.replace(ucfg.assess, enabled=False))


def unit_seed(cfg: StudyConfig) -> int | None:
    """The seed in a unit's folder and stage names: its training seed in a sweep, None otherwise."""
    return None if cfg.seeds is None else cfg.seed


def worker_log_path(out: Path, spec: ArmSpec, seed: int | None = None) -> Path:
    """Where an arm's process writes the records of its stages for the runner to read."""
    return out / "stages" / (f"worker_{spec.key}.json" if seed is None else f"worker_{spec.key}_seed-{seed}.json")


def spread_order(n: int) -> np.ndarray:
    """The positions ``0..n-1`` in an order whose every prefix is spread evenly over them (first
    and last first, then the middles), so the first k explained images span the selection's
    classes, and a budget that buys one image more keeps the ones it had."""
    order: list[int] = []
    for k in range(1, n + 1):
        for p in np.unique(np.linspace(0, n - 1, k).round().astype(np.int64)).tolist():
            if p not in order:
                order.append(p)
        if len(order) == n:
            break
    return np.array(order, dtype=np.int64)


def sanity_positions(n: int, n_sanity: int | None) -> np.ndarray:
    """The first ``n_sanity`` of :func:`spread_order` (all for None), sorted: the explained images
    (positions among ``n``) of the sanity checks."""
    if n_sanity is None or n_sanity >= n:
        return np.arange(n)
    return np.sort(spread_order(n)[:n_sanity])
