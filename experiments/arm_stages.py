"""One arm's stages in the arm's own process: train, predict, explain (one stage per method), then
the assess stage's steps (:mod:`experiments.assess`).

Started by :mod:`experiments.arm_worker` for one unit (an arm with one training seed), and there
for a twin the unit hosts (:attr:`experiments.units.Unit.hosts`); the runner
(:mod:`experiments.pipeline`) never imports a framework. Each stage is skipped when its key and
artefacts are unchanged (:mod:`experiments.stages`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np

from common.arm import TrainingData
from common.config import StudyConfig
from common.data.dataset import StudyData
from common.data.decode import default_cache_dir
from common.errors import StudyError
from common.explanation import Explanation, class_table
from common.io import read_json, write_json_atomic, write_npz_atomic
from common.machine import machine_info
from common.registry import ArmSpec, arm_spec, method_spec
from common.results import StageRecord
from experiments.faults import checkpoint
from experiments.layout import ArmPaths, arm_steps, make_selection, prepare_data, stage_name, unit_seed
from experiments.plan import planned_work
from experiments.stages import Stages

log = logging.getLogger("study")

# Builds the object whose ``action(what)`` runs the step ``assess_<what>`` (experiments.assess.ArmAssessment),
# from keywords (see ArmStages: the trained arm, the explained images and labels, the background, ...).
AssessmentFactory = Callable[..., object]


class ArmStages:
    """One arm's stages (train, predict, explain per method, assess); runs inside the arm's process.

    Args:
        assessment: builds the assess stage's steps (:class:`experiments.assess.ArmAssessment`)
            from keywords: ``arm`` (a getter of the trained arm), the explained ``images`` and
            their ``labels``, the ``background``, ``cfg``, ``spec``, ``n_classes`` and ``paths``;
            None: a study without the assess stage.
    """

    def __init__(
        self,
        cfg: StudyConfig,
        out: Path,
        spec: ArmSpec,
        force: bool = False,
        assessment: AssessmentFactory | None = None,
        data: StudyData | None = None,
    ):
        self.cfg, self.out, self.spec, self.force, self.assessment_factory = cfg, out, spec, force, assessment
        # The split the data stage wrote, not a new one: the same by construction, and this process
        # is spared scikit-learn's import (1.3 s), which an arm that does not explain never needs.
        # The files are listed and hashed again, so a data set changed since then is refused
        # (``data``: the study's data this process already holds and checked, for a hosted twin).
        self.data = data or prepare_data(cfg, split_csv=out / "split.csv")
        expected = read_json(out / "data" / "dataset.json")["data_key"]
        if self.data.data_key != expected:
            raise StudyError(
                f"the data set changed while the study ran (key {self.data.data_key} != {expected}); rerun the study"
            )
        self.selection = make_selection(cfg, self.data)
        self.seed = unit_seed(cfg)
        self.paths = ArmPaths.of(out, spec, self.seed)
        self.arm_class = spec.load_arm_class()
        self._arm = None

    def run(self, keys: Mapping[str, str]) -> list[StageRecord]:
        """Run every step of the arm (``layout.arm_steps``) whose key (``keys``, from
        :func:`experiments.keys.arm_keys`) or artefacts changed; return every step's record."""
        stages = Stages(self.out, self.force)
        n, b = len(self.selection.explain_idx), len(self.selection.background_idx)
        plans = {self.spec.key: self.assessment.plan} if self.cfg.assess.enabled and self.assessment_factory else None
        work = planned_work(self.cfg, n, len(self.data.classes), b, plans)
        plan = {r.stage: r for r in work if r.arm == self.spec.title}
        steps = arm_steps(self.cfg)
        estimated = False
        for i, step in enumerate(steps):
            record = stages.run(
                stage_name(self.spec, step, self.seed), keys[step], self.paths.outputs(step), self.action(step)
            )
            if plan and not estimated and record.status == "ran" and step.startswith("explain_") and record.seconds > 0:
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
        """The function that runs ``step`` and writes its artefacts."""
        if step == "train":
            return self.train
        if step == "predict":
            return self.predict
        if step.startswith("assess_"):
            return self.assessment.action(step.removeprefix("assess_"))
        return partial(self.explain, step.removeprefix("explain_"))

    @functools.cached_property
    def assessment(self):
        """The assess stage's steps, on the trained arm (loaded when a step first needs it)."""
        if self.assessment_factory is None:
            raise RuntimeError("this study has an assess stage, but its arm process was given no assessment")
        x_test, y_test = self.data.arrays("test")
        x_train, _ = self.data.arrays("train")
        explained, background = self.selection.explain_idx, self.selection.background_idx
        return self.assessment_factory(
            arm=lambda: self.arm,
            images=x_test[explained],
            labels=y_test[explained],
            background=x_train[background],
            cfg=self.cfg,
            spec=self.spec,
            n_classes=len(self.data.classes),
            paths=self.paths,
        )

    @property
    def arm(self):
        """The trained arm: the one just trained, or the saved one."""
        if self._arm is None:
            self._arm = self.arm_class.load(self.paths.model, self.cfg)
        return self._arm

    def train(self) -> None:
        if self.spec.weights_of is not None:
            return self.carry()
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

    def carry(self) -> None:
        """A twin's "train" step: the source arm's trained weights carried into this arm's framework."""
        source = ArmPaths.of(self.out, arm_spec(self.spec.weights_of), self.seed)
        n_classes, size = len(self.data.classes), self.data.image_size
        start = time.perf_counter()
        self._arm = self.arm_class.carry(source.dir, self.cfg, n_classes, size)
        seconds = time.perf_counter() - start
        self._arm.save(self.paths.model)
        write_json_atomic(
            self.paths.train_json,
            {
                "history": {},
                "best_val_epoch": None,
                "train_seconds": seconds,
                "info": {**self._arm.info(), "weights_of": str(source.dir.relative_to(self.out))},
                "fallbacks": [],
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
