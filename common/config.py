"""The study's one typed, frozen configuration.

Loaded from YAML (``experiments/configs/*.yaml``), overridden by command-line flags,
passed down read-only and saved next to every result. Each section mirrors one part
of the study: ``data``, ``pytorch``, ``keras``, ``explain``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from common.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # data folder; None = scikit-learn's bundled digits set
    image_size: int | None = None  # square side in pixels; None = 224 for folders, 32 for digits
    val_fraction: float = 0.2  # stratified share of train held out for validation
    test_fraction: float = 0.2  # stratified test share, only when no held-out folder exists
    cache_dir: str | None = None  # decoded-image cache; None = $STUDY_CACHE_DIR or ./.cache


@dataclass(frozen=True)
class PyTorchConfig:
    epochs: int = 15  # published: 15
    batch_size: int = 64  # published: 64
    lr: float = 0.01  # SGD learning rate, published: 0.01
    momentum: float = 0.9  # published: 0.9
    weight_decay: float = 1e-3  # published: 1e-3
    hflip: bool = False  # random horizontal flips while training (published: none)
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"


@dataclass(frozen=True)
class KerasConfig:
    epochs: int = 10  # published: 10
    batch_size: int = 32  # published: 32
    lr: float = 1e-4  # Adam learning rate, published: 1e-4
    weights: str = "imagenet"  # "imagenet", "none" (random on purpose) or a path to a no-top .h5 file
    dense_units: int = 256  # published head: Dense(256, relu)
    dropout: float = 0.5  # published head: Dropout(0.5)
    augment: bool = False  # published augmentation (rotation, zoom, shift, shear, flip)
    fine_tune: bool = False  # unfreeze the backbone (slow on a CPU)


@dataclass(frozen=True)
class ExplainConfig:
    n_explain: int | None = None  # test images explained; None = 2 per class
    n_background: int = 16  # training images in the SHAP background
    nsamples: int = 64  # Gradient SHAP samples per image (shap's default: 200)
    output: str = "logits"  # explained quantity: "logits" (default) or "probability"
    methods: tuple[str, ...] = ("deep", "gradient")  # SHAP explainers to run


@dataclass(frozen=True)
class StudyConfig:
    seed: int = 0  # one seed for the split, the selections, training and explainers
    out: str | None = None  # output folder; None = reports/<data set name>
    only: str | None = None  # run one arm: "pytorch" or "keras"; None = both
    data: DataConfig = field(default_factory=DataConfig)
    pytorch: PyTorchConfig = field(default_factory=PyTorchConfig)
    keras: KerasConfig = field(default_factory=KerasConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["explain"]["methods"] = list(self.explain.methods)
        return d


ARMS = ("pytorch", "keras")
METHODS = ("deep", "gradient")


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build a (nested) config dataclass from a mapping, rejecting unknown keys."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        sub = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value or {}, f"{where}.{name}" if where else name)
        elif name == "methods":
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any]) -> StudyConfig:
    cfg = _build(StudyConfig, values, "")
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """Load a YAML config (or the defaults), then apply dotted overrides such as
    ``{"pytorch.epochs": 3}``; ``None`` values in overrides are ignored."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        values = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(values)


def validate(cfg: StudyConfig) -> None:
    """Raise ConfigError for values no run could use."""
    problems = []
    if cfg.data.image_size is not None and cfg.data.image_size < 32:
        # ResNet50 without its top needs at least 32x32 input
        problems.append(f"data.image_size must be at least 32, got {cfg.data.image_size}")
    for name in ("val_fraction", "test_fraction"):
        v = getattr(cfg.data, name)
        if not 0 < v < 1:
            problems.append(f"data.{name} must be between 0 and 1, got {v}")
    for arm in (cfg.pytorch, cfg.keras):
        if arm.epochs < 1 or arm.batch_size < 1:
            problems.append("epochs and batch_size must be positive")
    if cfg.only is not None and cfg.only not in ARMS:
        problems.append(f"only must be one of {', '.join(ARMS)}, got {cfg.only!r}")
    if cfg.explain.output not in ("logits", "probability"):
        problems.append(f"explain.output must be 'logits' or 'probability', got {cfg.explain.output!r}")
    bad = [m for m in cfg.explain.methods if m not in METHODS]
    if bad:
        problems.append(f"explain.methods may hold only {', '.join(METHODS)}, got {', '.join(bad)}")
    if cfg.explain.n_explain is not None and cfg.explain.n_explain < 1:
        problems.append("explain.n_explain must be positive")
    if cfg.explain.n_background < 1 or cfg.explain.nsamples < 1:
        problems.append("explain.n_background and explain.nsamples must be positive")
    if cfg.pytorch.device not in ("auto", "cpu", "cuda"):
        problems.append(f"pytorch.device must be auto, cpu or cuda, got {cfg.pytorch.device!r}")
    w = cfg.keras.weights
    if w not in ("imagenet", "none") and not Path(w).expanduser().is_file():
        problems.append(f"keras.weights must be 'imagenet', 'none' or an existing weights file, got {w!r}")
    if problems:
        raise ConfigError("; ".join(problems))
