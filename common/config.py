"""The study's one typed, frozen configuration.

Loaded from YAML (``experiments/configs/*.yaml``), overridden by command-line flags,
passed down read-only and saved next to every result. Each section mirrors one part of
the study: ``data``, one section per registered arm (``pytorch``, ``keras``, and the factorial
design's ``keras_cnn`` and ``pytorch_resnet50``: each arm's settings dataclass lives in its own
package, ``<package>/config.py``) and ``explain``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common import registry
from common.data.limits import DEFAULT_MAX_IMAGE_PIXELS
from common.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # data folder; None = scikit-learn's bundled digits set
    image_size: int | None = None  # square side in pixels; None = 224 for folders, 32 for digits
    val_fraction: float = 0.2  # stratified share of train held out for validation
    test_fraction: float = 0.2  # stratified test share, only when no held-out folder exists
    cache_dir: str | None = None  # decoded-image and feature cache; None = $STUDY_CACHE_DIR or the user's cache folder
    # images with more pixels (width x height, read from the header) are skipped before decoding; Pillow's
    # decompression-bomb limit is set from it. 8192x8192: 61 Mpx cameras and 64 Mpx phones fit, and one decoding
    # process (one per core) needs at most ~512 MiB (common/data/limits.py says why)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class ExplainConfig:
    n_explain: int | None = None  # test images explained; None = 2 per class
    n_background: int = 16  # training images in the SHAP background
    nsamples: int = 64  # Gradient SHAP samples per image (shap's default: 200)
    output: str = "logits"  # explained quantity: "logits" (default) or "probability"
    methods: tuple[str, ...] = registry.SHAP_METHODS  # attribution methods to run (common.registry.METHODS)
    classes: str = "predicted+true"  # maps per image: predicted, predicted+true or all (common.registry)


@dataclass(frozen=True)
class AssessConfig:
    """The assess stage: how faithful each model's maps are, and whether they pass sanity checks."""

    enabled: bool = True  # false: no assess stage and no "Attribution quality" section
    budget: float = 0.25  # what the assessment may add, as a share of the explain stages' cost (experiments/budget.py)
    steps: int = 16  # deletion/insertion curves: pixels removed or inserted in this many steps
    spacing: str = "log"  # the steps' fractions: "log" (dense where the curves move, at the start) or "linear"
    random_orders: int | None = None  # random pixel orders per image (the baseline); None: the budget's, up to 10
    insertion_baseline: str = "auto"  # "mean" image, "blur"red copy, or auto: mean below 64 px, else blur
    blur_sigma: float = 5.0  # Gaussian sigma in pixels of the blurred insertion baseline
    n_sanity: int | None = None  # explained images of the sanity checks and cross-check; None: the budget's, up to all
    randomise: tuple[str, ...] = tuple(registry.RANDOMISATION_SCOPES)  # weight scopes re-drawn, as a cascade
    cross_check: bool = True  # compare with an independent library where an arm has one (Captum)


def _default_arm_settings() -> dict[str, Any]:
    return {key: spec.settings_class()() for key, spec in registry.ARMS.items()}


@dataclass(frozen=True)
class StudyConfig:
    seed: int = 0  # one seed for the split, the selections, training and explainers
    out: str | None = None  # output folder; None = reports/<data set name>
    only: str | None = None  # run one arm (a key of common.registry.ARMS); None = every arm of the design
    design: str = "published"  # which arms: "published" (the two published) or "factorial" (common.registry.DESIGNS)
    deterministic: bool = False  # oneDNN off + TensorFlow op determinism: figures that match across machines (slower)
    # "Is it the framework?": carry the trained PyTorch CNN into Keras and explain it there (registry.TWIN)
    framework_check: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    assess: AssessConfig = field(default_factory=AssessConfig)
    # arm key -> that arm's settings (its YAML section of the same name, e.g. ``pytorch:``)
    arms: Mapping[str, Any] = field(default_factory=_default_arm_settings, hash=False)
    split_seed: int | None = None  # seed of the split and the explained/background images; None = seed
    seeds: tuple[int, ...] | None = None  # training seeds of a seed sweep (layout <arm>/seed-<s>/); None = (seed,)

    @property
    def data_seed(self) -> int:
        """The seed of the split and of the explained and background images, shared by every training seed."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The seeds each arm is trained and explained with: ``seeds``, or ``(seed,)``."""
        return self.seeds if self.seeds is not None else (self.seed,)

    def arm(self, key: str) -> Any:
        """The settings section of arm ``key``."""
        return self.arms[key]

    def __getattr__(self, name: str) -> Any:
        # cfg.pytorch, cfg.keras: an arm's section reads like the other sections.
        arms = self.__dict__.get("arms") or {}
        if name in arms:
            return arms[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or arm section {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML/JSON holds it: arm sections at the top level, between data and explain.

        The arm sections are those of the design's arms and of ``only``'s (and the sections they
        read), so a published study's config holds the sections it always held; ``design`` is
        written only when it is not the default, for the same reason (:func:`from_dict` fills in
        the defaults of what is left out)."""
        d: dict[str, Any] = {
            "seed": self.seed,
            "out": self.out,
            "only": self.only,
        }
        if self.design != "published":
            d["design"] = self.design
        if not self.framework_check:
            d["framework_check"] = False
        d["data"] = dataclasses.asdict(self.data)
        written = _configured_arms(self)
        d.update({key: dataclasses.asdict(section) for key, section in self.arms.items() if key in written})
        d["explain"] = {**dataclasses.asdict(self.explain), "methods": list(self.explain.methods)}
        d["assess"] = {**dataclasses.asdict(self.assess), "randomise": list(self.assess.randomise)}
        # Written only when set, so a single-seed study's config (and its stage keys) stay as they were.
        if self.split_seed is not None:
            d["split_seed"] = self.split_seed
        if self.seeds is not None:
            d["seeds"] = list(self.seeds)
        d["deterministic"] = self.deterministic
        return d


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build a config section dataclass from a mapping, rejecting unknown keys."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = dict(values)
    for name in ("methods", "randomise"):
        if name in kwargs and isinstance(kwargs[name], (list, tuple)):
            kwargs[name] = tuple(kwargs[name])
    hints = typing.get_type_hints(cls)
    for name, value in kwargs.items():
        check_type(f"{where}.{name}", value, hints[name])
    return cls(**kwargs)


TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return isinstance(value, tuple) and all(_matches(v, item) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:  # YAML's true/false are not counts, and 1.5 epochs is not an integer
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        optional = type(None) in typing.get_args(tp)
        return " or ".join(names) + (" (or null)" if optional else "")
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    return TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def check_type(key: str, value: Any, tp: Any) -> None:
    """Raise ConfigError naming ``key``, ``value`` and the expected type unless ``value`` has type ``tp``."""
    if not _matches(value, tp):
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


SECTIONS = {"data": DataConfig, "explain": ExplainConfig, "assess": AssessConfig}
SCALARS = ("seed", "out", "only", "design", "framework_check", "split_seed", "seeds", "deterministic")
MAX_IMAGE_SIZE = 512  # pixels per side: 224 is the published size; above 512 a laptop's memory runs out
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit


def from_dict(values: Mapping[str, Any]) -> StudyConfig:
    """A validated config from a mapping shaped like the YAML files.

    Raises:
        ConfigError: unknown keys, or values no run could use.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(values).__name__}")
    arm_sections = {key: spec.settings_class() for key, spec in registry.ARMS.items()}
    known = [*SCALARS, *SECTIONS, *arm_sections]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs: dict[str, Any] = {k: values[k] for k in SCALARS if k in values}
    if isinstance(kwargs.get("seeds"), (list, tuple)):
        kwargs["seeds"] = tuple(kwargs["seeds"])
    hints = typing.get_type_hints(StudyConfig)
    for name, value in kwargs.items():
        check_type(name, value, hints[name])
    for name, cls in SECTIONS.items():
        if name in values:
            kwargs[name] = _build(cls, values[name] or {}, name)
    kwargs["arms"] = {key: _build(cls, values.get(key) or {}, key) for key, cls in arm_sections.items()}
    cfg = StudyConfig(**kwargs)
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
    """Raise ConfigError for values no run could use, naming every problem found."""
    problems = _data_problems(cfg)
    for section in cfg.arms.values():
        problems += section.problems()
    problems += _run_problems(cfg) + _explain_problems(cfg.explain) + _assess_problems(cfg.assess)
    if problems:
        raise ConfigError("; ".join(problems))


def _data_problems(cfg: StudyConfig) -> list[str]:
    """The seed's and the data section's problems."""
    problems = []
    if not 0 <= cfg.seed <= MAX_SEED:
        problems.append(f"seed must be between 0 and {MAX_SEED}, got {cfg.seed}")
    if cfg.data.image_size is not None and not 32 <= cfg.data.image_size <= MAX_IMAGE_SIZE:
        # ResNet50 without its top needs at least 32x32 input; the upper bound keeps the decoded data in memory
        problems.append(f"data.image_size must be between 32 and {MAX_IMAGE_SIZE} pixels, got {cfg.data.image_size}")
    for name in ("val_fraction", "test_fraction"):
        v = getattr(cfg.data, name)
        if not 0 < v < 1:
            problems.append(f"data.{name} must be between 0 and 1, got {v}")
    if cfg.data.max_image_pixels < 1:
        problems.append(f"data.max_image_pixels must be positive, got {cfg.data.max_image_pixels}")
    return problems


def _run_problems(cfg: StudyConfig) -> list[str]:
    """The training seeds' and the arm choice's problems."""
    problems = []
    if cfg.seeds is not None and (
        not isinstance(cfg.seeds, tuple)
        or not cfg.seeds
        or not all(isinstance(s, int) for s in cfg.seeds)
        or len(set(cfg.seeds)) != len(cfg.seeds)
    ):
        problems.append(f"seeds must be a non-empty list of distinct integers, got {cfg.seeds!r}")
    trained = [spec.key for spec in registry.trained_arms()]
    if cfg.only is not None and cfg.only not in trained:
        problems.append(f"only must be one of {', '.join(trained)}, got {cfg.only!r}")
    if cfg.design not in registry.DESIGNS:
        problems.append(f"design must be one of {', '.join(registry.DESIGNS)}, got {cfg.design!r}")
    return problems


def _explain_problems(e: ExplainConfig) -> list[str]:
    problems = []
    if e.output not in registry.OUTPUTS:
        problems.append(f"explain.output must be 'logits' or 'probability', got {e.output!r}")
    bad = [m for m in e.methods if m not in registry.METHODS]
    if bad:
        problems.append(f"explain.methods may hold only {', '.join(registry.METHODS)}, got {', '.join(bad)}")
    if e.classes not in registry.CLASS_SELECTIONS:
        problems.append(f"explain.classes must be one of {', '.join(registry.CLASS_SELECTIONS)}, got {e.classes!r}")
    if e.n_explain is not None and e.n_explain < 1:
        problems.append("explain.n_explain must be positive")
    if e.n_background < 1 or e.nsamples < 1:
        problems.append("explain.n_background and explain.nsamples must be positive")
    return problems


def _assess_problems(a: AssessConfig) -> list[str]:
    problems = []
    if a.steps < 2 or (a.random_orders is not None and a.random_orders < 1):
        problems.append("assess.steps must be at least 2 and assess.random_orders at least 1")
    if not a.budget >= 0:
        problems.append(f"assess.budget must be a share of 0 or more, got {a.budget}")
    if a.spacing not in ("log", "linear"):
        problems.append(f"assess.spacing must be log or linear, got {a.spacing!r}")
    if a.insertion_baseline not in ("auto", "mean", "blur"):
        problems.append(f"assess.insertion_baseline must be auto, mean or blur, got {a.insertion_baseline!r}")
    if a.blur_sigma <= 0:
        problems.append("assess.blur_sigma must be positive")
    if a.n_sanity is not None and a.n_sanity < 1:
        problems.append("assess.n_sanity must be positive")
    bad = [s for s in a.randomise if s not in registry.RANDOMISATION_SCOPES]
    if bad:
        problems.append(
            f"assess.randomise may hold only {', '.join(registry.RANDOMISATION_SCOPES)}, got {', '.join(bad)}"
        )
    return problems


def design_arms(design: str) -> list[registry.ArmSpec]:
    """The arms a study of ``design`` runs, in registry order: those whose own design
    (``ArmSpec.design``) is ``design`` or comes before it in ``registry.DESIGNS``."""
    order = list(registry.DESIGNS)
    return [spec for spec in registry.trained_arms() if order.index(spec.design) <= order.index(design)]


def selected_arms(cfg: StudyConfig) -> list[registry.ArmSpec]:
    """The arms this run trains and explains, in registry order: ``only``'s, else the design's."""
    return [registry.arm_spec(cfg.only)] if cfg.only else design_arms(cfg.design)


def twin_arms(cfg: StudyConfig) -> list[registry.ArmSpec]:
    """The twins this run carries weights into ("Is it the framework?", ``framework_check``): those
    whose source arm (``ArmSpec.weights_of``) the run trains; none when the run trains one arm only (``only``)."""
    if not cfg.framework_check or cfg.only is not None:
        return []
    trained = {spec.key for spec in selected_arms(cfg)}
    return [spec for spec in registry.ARMS.values() if spec.weights_of in trained]


def _configured_arms(cfg: StudyConfig) -> set[str]:
    """The keys of the arm sections a config holds: the design's arms, ``only``'s, and the
    sections of other arms they read (a settings class's ``borrowed``)."""
    keys = {spec.key for spec in design_arms(cfg.design)} | ({cfg.only} if cfg.only else set())
    for key in list(keys):
        section = cfg.arms.get(key)
        keys |= {arm for arm, _ in getattr(section, "borrowed", ())}
    return keys
