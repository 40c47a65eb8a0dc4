"""What every study's metrics.json holds: the data summary, each model's evaluation, each
explanation's figures, the paired comparison, the agreement between maps, the selection and the
stage records; and the two shapes every other part reuses, :class:`Estimate` and :class:`Verdict`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.typed_json import OMIT_NONE


@dataclass
class Estimate:
    """A mean over images with its two-sided 95% Student-t interval (None where undefined)."""

    mean: float | None
    ci95: list[float | None]  # [low, high]
    n: int  # images with a finite value


@dataclass
class Verdict:
    """One of the report's verdicts: a rule applied to a statistic, with its reference and its sample.

    ``status``: "pass" and "fail" (the rule decided, significant after Holm's correction where
    it is a test), "not significant" (enough images, no significant difference), "too few
    images" (fewer than any test in the family could decide on: ``n_needed``), "uninformative"
    (the null itself reaches the threshold) or "not measured".
    """

    status: str
    n: int  # images behind it
    effect: Estimate | None  # the statistic the rule reads: mean over images with its 95% interval
    reference: float | None  # what the statistic is tested against
    p: float | None  # two-sided, as computed
    p_holm: float | None  # Holm-corrected within the arm's family of tests
    rule: str  # the rule, in words
    n_needed: int | None = field(default=None, metadata=OMIT_NONE)  # images any verdict in the family needs


@dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the data root
    # "not an image", "corrupt image: ...", "image too large: ...", "unreadable file: ...", "broken link",
    # "not a regular file", "image outside a class folder"
    reason: str


@dataclass
class DatasetSummary:
    """The data set as the study used it (``data/dataset.json`` and metrics.json's ``dataset``)."""

    name: str  # folder name, or "digits"
    root: str | None  # None for the bundled digits set
    layout: str  # "split-folders", "class-folders" or "bundled"
    held_out_folder: str | None  # e.g. "test"
    classes: list[str]
    image_size: int
    resize: str  # how images were resized, e.g. "PIL.BILINEAR"
    counts: dict[str, dict[str, int]]  # split -> class -> images
    skipped: list[SkippedFile]
    data_key: str  # content key of the decoded pixels and the split


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ModelEvaluation:
    """One model on the test split, with its training record."""

    test_accuracy: float
    test_accuracy_ci95: list[float]  # exact Clopper-Pearson [low, high]
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]  # rows = true class
    history: dict[str, list[float]]  # common.arm.HISTORY_KEYS -> one value per epoch
    best_val_epoch: int
    train_seconds: float
    predict_seconds: float
    info: dict[str, Any]  # what the arm recorded (device, parameters, weights, ...)
    backbone_weights: str | None = field(default=None, metadata=OMIT_NONE)  # a pretrained part's weights

    @property
    def device(self) -> str | None:
        return self.info.get("device")


@dataclass
class ExplanationSummary:
    """One model's maps from one method: cost and additivity."""

    seconds: float
    n_images: int
    n_background: int
    n_classes_explained: int  # maps per image at most (K for every class, 2 for predicted+true)
    output: str  # "logits" or "probability"
    additivity_max_abs_error: float  # max |sum(map) - (f(x) - E[f(background)])| over images and classes (float64)
    additivity_mean_abs_error: float | None = field(default=None, metadata=OMIT_NONE)  # mean of the same
    additivity_relative_error: float | None = field(default=None, metadata=OMIT_NONE)  # mean error / mean |f(x) - E f|
    nsamples: int | None = field(default=None, metadata=OMIT_NONE)  # samples per image of a sampled method
    additivity_note: str | None = field(default=None, metadata=OMIT_NONE)  # why the error is for reference only
    n_maps: int | None = field(default=None, metadata=OMIT_NONE)  # maps computed (image x class pairs)


@dataclass
class PairedComparison:
    """Exact McNemar test of two models on the same test images.

    Written with the arms' keys in the names of the discordant counts
    (``only_pytorch_correct``), so a reader of the JSON needs no legend.
    """

    arm_a: str  # arm keys, in registry order
    arm_b: str
    mcnemar_p: float
    only_a_correct: int
    only_b_correct: int
    both_correct: int
    both_wrong: int
    n: int

    def to_json(self) -> dict[str, Any]:
        return {
            "mcnemar_p": self.mcnemar_p,
            f"only_{self.arm_a}_correct": self.only_a_correct,
            f"only_{self.arm_b}_correct": self.only_b_correct,
            "both_correct": self.both_correct,
            "both_wrong": self.both_wrong,
            "n": self.n,
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> PairedComparison:
        only = [(m.group(1), v) for k, v in values.items() if (m := re.fullmatch(r"only_(.+)_correct", k))]
        if len(only) != 2:
            raise ValueError(f"comparison: expected two only_<arm>_correct counts, got {[k for k, _ in only]}")
        (a, only_a), (b, only_b) = only
        return cls(a, b, values["mcnemar_p"], only_a, only_b, values["both_correct"], values["both_wrong"], values["n"])


@dataclass
class Agreement:
    """Rank agreement between every pair of maps (labels such as "pytorch_deep")."""

    pairs: dict[str, float | None]  # "a~b" -> mean Spearman rho over images (None: undefined everywhere)
    n_images: dict[str, int]  # "a~b" -> images with a defined rho
    per_image: list[dict[str, float | None]]
    method: str  # how it was computed, in words
    # version 2 only: "a~b" -> the lower of the two maps' seed-to-seed agreements
    noise_floor: dict[str, float | None] = field(default_factory=dict)
    # "a~b" -> sqrt(r_a * r_b), each map's agreement with a second draw of itself on the same images
    # (1 for a deterministic method): the most the pair can agree, Spearman's correction for attenuation
    ceiling: dict[str, float | None] = field(default_factory=dict)
    ceiling_images: dict[str, int] = field(default_factory=dict)  # "a~b" -> images the ceiling is measured on
    prediction_differs: dict[str, int] = field(default_factory=dict)  # "a~b" -> images the two models predict apart
    top_k: dict[str, float | None] = field(default_factory=dict)  # "a~b" -> mean share of the top-k pixels in common
    sign: dict[str, float | None] = field(default_factory=dict)  # "a~b" -> ... in common and of the same sign
    top_k_fraction: float | None = None  # k as a share of the pixels
    compared_class: str = "predicted"  # the class each map is taken at: "true" (shared) or "predicted" (version 2)


@dataclass
class SelectionSummary:
    explain_test_positions: list[int]  # positions in the test split
    background_train_positions: list[int]  # positions in the train split


@dataclass
class StageRecord:
    stage: str  # e.g. "train pytorch", "evaluate"
    status: str  # "ran" or "cached"
    seconds: float  # of the run that produced the stage's artifacts
