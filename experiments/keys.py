"""Stage keys: what each stage's result depends on, hashed.

A stage is skipped when its key is the one its stamp recorded (:mod:`experiments.stages`). A
key holds the stage's inputs (data, selection, settings, the keys of the stages before it) and
a digest of the code it runs: the modules that do its work and every project module they
import, found by reading the imports (:mod:`experiments.sources`), so no list of paths kept by
hand can miss a module or name one that moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.config import StudyConfig
from common.io import stable_key
from common.registry import ArmSpec, arm_spec, library_versions, method_spec
from common.results import SCHEMA_VERSION
from experiments.layout import Selection, assessed_methods
from experiments.sources import SOURCE_ROOT, source_digest

PIPELINE_VERSION = 1  # bump when a stage's output changes meaning

# The modules that do each stage's work; their digests cover every project module they import.
ARM_STAGE_CODE = ("experiments.arm_stages",)  # train, predict, explain; with the arm's own package
ASSESS_CODE = ("experiments.assess",)
EVALUATE_CODE = ("experiments.evaluate", "experiments.sweep")
REPORT_CODE = ("experiments.report_stage",)
REPORT_FILES = ("common/report/templates",)  # what the report stage reads besides its modules


def arm_code_digest(spec: ArmSpec, root: Path = SOURCE_ROOT) -> str:
    """A digest of the code an arm's trained model, predictions and maps come from: its modules
    (``<package>.<arm_module>``, ``<package>.config``), the stages' code in its process, and every
    project module they import."""
    return source_digest([f"{spec.package}.{spec.arm_module}", f"{spec.package}.config", *ARM_STAGE_CODE], root=root)


def arm_settings(cfg: StudyConfig, spec: ArmSpec) -> dict[str, Any]:
    """What an arm computes from in the config: its section without the settings that say where it
    runs (``placement``), and the settings of other arms' sections it reads (``borrowed``, as
    ``"<arm>.<setting>"``)."""
    settings = cfg.arm(spec.key)
    section = {k: v for k, v in dataclasses.asdict(settings).items() if k not in settings.placement}
    for arm, name in getattr(settings, "borrowed", ()):
        section[f"{arm}.{name}"] = getattr(cfg.arm(arm), name)
    return section


def arm_keys(
    cfg: StudyConfig, data_key: str, selection: Selection, spec: ArmSpec, root: Path = SOURCE_ROOT
) -> dict[str, str]:
    """The input key of each of an arm's stages (``layout.arm_steps``) for data of content key ``data_key``."""
    section = arm_settings(cfg, spec)
    if spec.weights_of is not None:  # a twin's "train" carries its source's trained weights
        source = arm_keys(cfg, data_key, selection, arm_spec(spec.weights_of), root)["train"]
        train = stable_key(PIPELINE_VERSION, "carry", spec.key, arm_code_digest(spec, root), source, section)
    else:
        train = stable_key(
            PIPELINE_VERSION, "train", spec.key, arm_code_digest(spec, root), data_key, cfg.seed, section
        )
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
        keys.update(_assess_keys(cfg, selection, train, keys, root))
    return keys


def _assess_keys(
    cfg: StudyConfig, selection: Selection, train: str, keys: Mapping[str, str], root: Path
) -> dict[str, str]:
    assess = stable_key(
        "assess", source_digest(ASSESS_CODE, root=root), dataclasses.asdict(cfg.assess), selection.key, cfg.seed, train
    )
    out = {"assess_random": stable_key(assess, "random")}
    for method in assessed_methods(cfg):
        out[f"assess_{method}"] = stable_key(
            assess,
            method,
            keys.get(f"explain_{method}"),
            cfg.explain.output,
            cfg.explain.nsamples if method_spec(method).sampled else None,
        )
    return out


def evaluate_key(
    cfg: StudyConfig, selection: Selection, arm_stage_keys: Mapping[str, Any], root: Path = SOURCE_ROOT
) -> str:
    """The evaluate stage's key: its code, the config, the libraries, the selection and every arm's stage keys."""
    return stable_key(
        PIPELINE_VERSION,
        "evaluate",
        SCHEMA_VERSION,
        source_digest(EVALUATE_CODE, root=root),
        cfg.to_dict(),
        library_versions(),
        selection.key,
        arm_stage_keys,
    )


def report_key(evaluated: str, execution: Mapping[str, Any], root: Path = SOURCE_ROOT) -> str:
    """The report stage's key: the evaluate stage's key, its code and templates, and how the units ran."""
    return stable_key("report", evaluated, source_digest(REPORT_CODE, REPORT_FILES, root=root), execution)
