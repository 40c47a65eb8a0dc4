"""metrics.json's ``framework_check`` ("Is it the framework?": one network in both frameworks) and
``factorial`` (the 2 x 2 of two architectures by two frameworks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.results.base import Estimate, PairedComparison, Verdict
from common.typed_json import OMIT_NONE


@dataclass
class TwinMethod:
    """One method's maps of one trained network, computed in its own framework and in the other."""

    max_relative_difference: float | None  # max |own - twin| over max |own|, over every map both explained
    rho: Estimate  # per image, Spearman of the two frameworks' maps at the true class
    n_maps: int  # image x class maps both explained
    # a sampled method: per image, Spearman between two draws in the network's own framework at the
    # true class (the assess stage's ceiling images): how far two runs of the same framework agree
    ceiling: Estimate | None = field(default=None, metadata=OMIT_NONE)
    # the two published arms' agreement for this method at the true class (different networks), and its ceiling
    models_rho: float | None = field(default=None, metadata=OMIT_NONE)
    models_ceiling: float | None = field(default=None, metadata=OMIT_NONE)
    verdict: Verdict | None = field(default=None, metadata=OMIT_NONE)  # the frameworks agree (see its rule)


@dataclass
class FrameworkCheck:
    """ "Is it the framework?": one trained network (``source``) carried with its weights into the other
    framework (``twin``) and explained there by that framework's explainers, on the same images with
    the same background."""

    source: str  # arm name of the trained network, e.g. pytorch_cnn
    twin: str  # arm name of its twin, e.g. keras_twin_cnn
    other: str | None  # arm name of the other framework's published model (whose agreement is shown beside)
    test_accuracy: float  # the source's, on the shared test split
    twin_test_accuracy: float  # the twin's: equal when the weights carried over
    predictions_differ: int  # test images the two predict differently
    n_test: int
    methods: dict[str, TwinMethod]  # method -> figures


@dataclass
class FactorComparison:
    """Two arms that differ in one factor (framework or architecture) and share the other."""

    factor: str  # "framework" or "architecture": what differs
    held: str  # what the two share: an architecture ("CNN") or a framework ("PyTorch")
    arm_a: str  # arm names
    arm_b: str
    accuracy_difference: float  # a - b, on the shared test split
    comparison: PairedComparison  # exact McNemar on the same test images
    mcnemar_p_holm: float | None  # Holm-corrected over the design's four comparisons
    rho: dict[str, float | None]  # method -> the two arms' maps' mean Spearman at the true class
    ceiling: dict[str, float | None]  # method -> sqrt(r_a r_b): the most two noisy maps can agree
    n_images: dict[str, int]  # method -> images with a defined rho


@dataclass
class Factorial:
    """The 2 x 2 design: two architectures, each trained in both frameworks (``--design factorial``)."""

    frameworks: list[str]  # column order, e.g. ["PyTorch", "Keras"]
    architectures: list[str]  # row order, e.g. ["CNN", "ResNet50"]
    cells: dict[str, dict[str, str]]  # architecture -> framework -> arm name
    comparisons: list[FactorComparison]  # framework effects (one per architecture), then architecture effects
    # arm name -> method -> the stability of its maps across training seeds (the retraining ceiling:
    # how far the same arm retrained agrees with itself); empty without --seeds
    retraining: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    # the settings that differ between the two frameworks for each architecture, in words:
    # architecture -> [[setting, PyTorch's, Keras's], ...]
    defaults: dict[str, list[list[str]]] = field(default_factory=dict)
