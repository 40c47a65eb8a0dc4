"""Stage keys follow the code each stage runs (experiments/keys.py, experiments/sources.py).

Each test edits one module in a temporary copy of the source tree and recomputes every stage's
key there: the stages that run the module (or import it, however indirectly) get new keys, the
others keep theirs. A module that a stage imports but that no longer exists is an error.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.config import load_config
from common.registry import ARMS
from experiments import keys
from experiments.layout import twin_config
from experiments.sources import SOURCE_ROOT, SourceError, dependencies

PACKAGES = ("common", "experiments", "pytorch_impl", "keras_impl", "benchmarks")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's packages, to edit."""
    for package in PACKAGES:
        shutil.copytree(SOURCE_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def stage_keys(root: Path) -> dict[str, str]:
    """Every stage's key of a default study of both arms, computed from the source under ``root``."""
    cfg = load_config()
    selection = SimpleNamespace(key="selection")
    out, per_arm = {}, {}
    for spec in ARMS.values():  # a twin's unit runs without the assess stage
        unit_cfg = cfg if spec.weights_of is None else twin_config(cfg)
        per_arm[spec.key] = keys.arm_keys(unit_cfg, "data", selection, spec, root=root)
        out.update({f"{step} {spec.key}": key for step, key in per_arm[spec.key].items()})
    out["evaluate"] = keys.evaluate_key(cfg, selection, per_arm, root=root)
    out["report"] = keys.report_key(out["evaluate"], {"jobs": 1}, root=root)
    return out


def changed_by(tree: Path, rel: str) -> set[str]:
    """The stages whose keys change when the module ``rel`` (a path under the tree) is edited."""
    before = stage_keys(tree)
    path = tree / rel
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    after = stage_keys(tree)
    assert set(before) == set(after)
    return {stage for stage in before if before[stage] != after[stage]}


def stages_of(*arms: str, steps: tuple[str, ...] | None = None) -> set[str]:
    """The names of the given steps (all, by default) of the given arms."""
    names = stage_keys(SOURCE_ROOT)
    return {s for s in names if s.split(" ")[-1] in arms and (steps is None or s.split(" ")[0] in steps)}


def test_the_keys_are_stable_and_the_copy_is_the_checkout(tree):
    assert stage_keys(tree) == stage_keys(tree) == stage_keys(SOURCE_ROOT)


def test_an_arms_model_code_changes_that_arm_and_what_comes_after(tree):
    changed = changed_by(tree, "pytorch_impl/cnn.py")
    # the Keras twin carries the PyTorch CNN's trained weights: its stages follow
    assert changed == stages_of("pytorch", "keras_twin") | {"evaluate", "report"}
    # one architecture's module changes that architecture's arms in its framework only (the twin is the CNN)
    assert changed_by(tree, "keras_impl/cnn.py") == stages_of("keras_cnn", "keras_twin") | {"evaluate", "report"}
    assert changed_by(tree, "keras_impl/twin.py") == stages_of("keras_twin") | {"evaluate", "report"}
    assert changed_by(tree, "pytorch_impl/resnet50.py") == stages_of("pytorch_resnet50") | {"evaluate", "report"}


def test_what_both_arms_of_a_framework_share_changes_both(tree):
    changed = changed_by(tree, "pytorch_impl/model.py")
    assert changed == stages_of("pytorch", "pytorch_resnet50", "keras_twin") | {"evaluate", "report"}


def test_the_keras_loader_changes_both_resnet50s(tree):
    # the PyTorch ResNet50 converts the Keras arm's backbone, built by the Keras arm's loader
    changed = changed_by(tree, "keras_impl/weights.py")
    assert changed == stages_of("keras", "pytorch_resnet50") | {"evaluate", "report"}


def test_the_interface_every_arm_shares_changes_every_arm(tree):
    # common/arm.py imports common/quality/randomisation.py: the arms run it inside randomized()
    assert changed_by(tree, "common/quality/randomisation.py") == set(stage_keys(tree))


def test_a_measure_of_the_assess_stage_changes_assess_and_evaluate_but_no_training(tree):
    changed = changed_by(tree, "common/quality/faithfulness.py")
    assess = {s for s in stage_keys(tree) if s.startswith("assess_")}
    assert changed == assess | {"evaluate", "report"}


def test_plotting_changes_the_report_only(tree):
    assert changed_by(tree, "common/report/plots.py") == {"report"}
    assert changed_by(tree, "common/report/templates/report.html.j2") == {"report"}


def test_a_verdict_rule_of_the_evaluate_stage_leaves_the_arms_alone(tree):
    assert changed_by(tree, "common/verdicts.py") == {"evaluate", "report"}


def test_the_budget_changes_what_the_assess_stage_runs_and_nothing_trained(tree):
    assess = {s for s in stage_keys(tree) if s.startswith("assess_")}
    assert changed_by(tree, "experiments/budget.py") == assess | {"evaluate", "report"}


@pytest.mark.parametrize("rel", ["benchmarks/measure.py", "experiments/run_all.py"])
def test_a_module_no_stage_runs_changes_nothing(tree, rel):
    assert changed_by(tree, rel) == set()


def test_a_module_a_stage_imports_cannot_go_missing(tree):
    (tree / "common" / "quality" / "complexity.py").rename(tree / "common" / "quality" / "sparseness.py")
    with pytest.raises(SourceError, match="common.quality.complexity"):
        stage_keys(tree)


def test_dependencies_follow_imports_inside_functions_and_the_packages_around(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("import os\n\ndef f():\n    from pkg.sub import b\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("from . import c\n")
    (tmp_path / "pkg" / "sub" / "c.py").write_text("import numpy\n")
    (tmp_path / "pkg" / "unused.py").write_text("")
    assert dependencies(["pkg.a"], tmp_path) == ["pkg", "pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.c"]
