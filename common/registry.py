"""The study's registries: every arm and every explanation method, defined once.

Everything else reads from here: the command line's choices, the config's arm sections,
stage names, output folders, metrics.json keys, report labels and the library versions
that are recorded. Nothing here imports a framework, or any module of the project.

Adding an arm (say a JAX model) means a package with the same files as ``pytorch_impl/``
(``config.py`` with its settings dataclass, a module per architecture, ``train.py``,
``explain.py``, and a module with its :class:`common.arm.Arm` subclass) and one
:class:`ArmSpec` in :data:`ARMS`; ``tests/test_registry.py`` runs the whole pipeline through a
fake one. An arm joins every study (``design: "published"``) or only the factorial one
(:data:`DESIGNS`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import platform
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArmSpec:
    """One arm of the study: a framework's model, and every name it goes by."""

    key: str  # CLI choice (--only), config section and stage names, e.g. "pytorch"
    name: str  # metrics.json key and output folder, e.g. pytorch_cnn
    title: str  # the model in reports, e.g. "PyTorch CNN"
    framework: str  # the framework in map names ("PyTorch Deep SHAP")
    package: str  # holds config.py and the arm's module (arm_module)
    arm_class: str  # the Arm subclass in <package>.<arm_module>
    config_class: str  # the settings dataclass in <package>.config (the config's <key>: section)
    model_filename: str  # the saved model inside the arm's output folder
    versions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (label, PyPI names tried in turn) to record
    independent_library: str | None = None  # a library that implements the same estimators (cross-check), e.g. captum
    arm_module: str = "arm"  # the module of the package holding arm_class; it and config make the code digest
    architecture: str = ""  # the network, one of ARCHITECTURES where it is one of the study's ("" for others)
    design: str = "published"  # the smallest study design that runs it (DESIGNS): "published" runs in every one
    # a twin: not trained, it carries the trained weights of the arm with this key into its own framework
    # ("Is it the framework?"); it runs after that arm, in every study that runs it, and joins no table of models
    weights_of: str | None = None

    def load_arm_class(self) -> type:
        """The arm's class (a :class:`common.arm.Arm` subclass), imported now: only the arm's own
        process imports its framework. Nothing of the project is imported at this module's top,
        so every module can read the registry."""
        return getattr(importlib.import_module(f"{self.package}.{self.arm_module}"), self.arm_class)

    def settings_class(self) -> type:
        """The dataclass of the arm's config section (its module imports no framework)."""
        return getattr(importlib.import_module(f"{self.package}.config"), self.config_class)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ArmSpec:
        versions = tuple((label, tuple(names)) for label, names in values.get("versions", ()))
        return cls(**{**values, "versions": versions})


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method: what it is called and what it costs."""

    key: str  # config value and file names, e.g. "deep"
    title: str  # in reports, e.g. "Deep SHAP"
    explainer: str  # the shap class that computes it
    additive: bool  # True: the maps sum to f(x) - E[f(background)] exactly; False: only in expectation
    sampled: bool  # draws nsamples random points per image (seeded), so nsamples is one of its inputs
    baseline: bool = False  # a cheap non-SHAP method the assessment measures for comparison (not explained by default)

    def passes(self, n_images: int, n_outputs: int, n_background: int, nsamples: int) -> int:
        """Forward+backward passes (rows) shap 0.51 runs: per image and explained output,
        Deep SHAP one pass over the image tiled against the background (2 x background
        rows), Gradient SHAP ``nsamples`` interpolated rows."""
        if self.baseline:
            return n_images * n_outputs  # one gradient per image and output
        per_output = nsamples if self.sampled else 2 * n_background
        return n_images * n_outputs * per_output


ARMS: dict[str, ArmSpec] = {
    spec.key: spec
    for spec in (
        ArmSpec(
            key="pytorch",
            name="pytorch_cnn",
            title="PyTorch CNN",
            framework="PyTorch",
            package="pytorch_impl",
            arm_class="PyTorchArm",
            config_class="PyTorchConfig",
            model_filename="model.pt",
            versions=(("torch", ("torch",)), ("torchvision", ("torchvision",))),
            independent_library="captum",
            arm_module="cnn_arm",
            architecture="CNN",
        ),
        ArmSpec(
            key="keras",
            name="keras_resnet50",
            title="Keras ResNet50",
            framework="Keras",
            package="keras_impl",
            arm_class="KerasArm",
            config_class="KerasConfig",
            model_filename="model.keras",
            versions=(("tensorflow", ("tensorflow-cpu", "tensorflow")), ("keras", ("keras",))),
            arm_module="resnet50_arm",
            architecture="ResNet50",
        ),
        # The factorial design's other two cells: each architecture in the other framework.
        ArmSpec(
            key="keras_cnn",
            name="keras_cnn",
            title="Keras CNN",
            framework="Keras",
            package="keras_impl",
            arm_class="KerasCNNArm",
            config_class="KerasCNNConfig",
            model_filename="model.keras",
            versions=(("tensorflow", ("tensorflow-cpu", "tensorflow")), ("keras", ("keras",))),
            arm_module="cnn_arm",
            architecture="CNN",
            design="factorial",
        ),
        ArmSpec(
            key="pytorch_resnet50",
            name="pytorch_resnet50",
            title="PyTorch ResNet50",
            framework="PyTorch",
            package="pytorch_impl",
            arm_class="PyTorchResNet50Arm",
            config_class="PyTorchResNet50Config",
            model_filename="model.pt",
            versions=(("torch", ("torch",)), ("torchvision", ("torchvision",))),
            independent_library="captum",  # agrees with shap on this layout (tests/test_pytorch_resnet50.py)
            arm_module="resnet50_arm",
            architecture="ResNet50",
            design="factorial",
        ),
    )
}


def published_arm(architecture: str) -> ArmSpec:
    """The published design's arm of ``architecture`` (one of ARCHITECTURES), e.g. "ResNet50": the Keras ResNet50.

    Raises:
        KeyError: no published arm has that architecture.
    """
    for spec in ARMS.values():
        if spec.design == "published" and spec.architecture == architecture and spec.weights_of is None:
            return spec
    raise KeyError(f"no published arm is a {architecture}")


# "Is it the framework?": the published CNN carried with its PyTorch weights into Keras (keras_impl/twin.py)
TWIN = ArmSpec(
    key="keras_twin",
    name="keras_twin_cnn",
    title="Keras twin of the PyTorch CNN",
    framework="Keras",
    package="keras_impl",
    arm_class="KerasTwinArm",
    config_class="KerasTwinConfig",
    model_filename="model.keras",
    versions=(("tensorflow", ("tensorflow-cpu", "tensorflow")), ("keras", ("keras",))),
    arm_module="twin_arm",
    architecture="CNN",
    weights_of=published_arm("CNN").key,
)
ARMS[TWIN.key] = TWIN

# Which arms a study runs (``design`` in the config, ``--design``): an arm joins every design from
# its own (ArmSpec.design) on; ``only`` picks one registered arm whatever the design.
DESIGNS = {
    "published": "the two published arms: the PyTorch CNN and the Keras ResNet50",
    "factorial": "framework x architecture: each architecture in both frameworks",
}

ARCHITECTURES = ("CNN", "ResNet50")  # the factorial design's architectures, each built in both frameworks


@dataclass(frozen=True)
class FrameworkDefault:
    """One default that differs between the frameworks' arms of one architecture: both arms keep
    their framework's own, as the factorial design asks (same architecture and recipe otherwise)."""

    setting: str
    pytorch: str  # the PyTorch arm's
    keras: str  # the Keras arm's


_KAIMING = "Kaiming uniform with a = √5: U(±1/√fan_in)"  # torch.nn.Conv2d's and nn.Linear's reset_parameters
_GLOROT = "Glorot uniform: U(±√(6 / (fan_in + fan_out)))"  # keras.layers.Conv2D's and Dense's default
_SHUFFLE = FrameworkDefault("batch order", "torch.randperm, seeded generator", "NumPy permutation, seeded generator")

# architecture -> what differs between its PyTorch and its Keras arm (checked against torch 2.14 and keras 3.15)
FRAMEWORK_DEFAULTS: dict[str, tuple[FrameworkDefault, ...]] = {
    "CNN": (
        FrameworkDefault("convolution and dense kernels' initialisation", _KAIMING, _GLOROT),
        FrameworkDefault("biases' initialisation", "U(±1/√fan_in)", "zeros"),
        FrameworkDefault("batch norm's epsilon", "1e-5", "1e-3"),
        FrameworkDefault(
            "batch norm's running statistics",
            "momentum 0.1 (each batch weighs 10%), unbiased batch variance",
            "momentum 0.99 (each batch weighs 1%), biased batch variance",
        ),
        FrameworkDefault(
            "SGD's weight decay (1e-3 in both)",
            "coupled: added to the gradient, so it runs through the momentum (L2)",
            "decoupled: each step shrinks the weights by learning rate x decay",
        ),
        _SHUFFLE,
    ),
    "ResNet50": (
        FrameworkDefault("head's kernels' initialisation", _KAIMING, _GLOROT),
        FrameworkDefault("head's biases' initialisation", "U(±1/√fan_in)", "zeros"),
        FrameworkDefault("Adam's epsilon", "1e-8", "1e-7"),
        _SHUFFLE,
    ),
}

METHODS: dict[str, MethodSpec] = {
    spec.key: spec
    for spec in (
        MethodSpec("deep", "Deep SHAP", "shap.DeepExplainer", additive=True, sampled=False),
        MethodSpec("gradient", "Gradient SHAP", "shap.GradientExplainer", additive=False, sampled=True),
        # gradient x (x - mean(background)): one backward pass per image and class. Exact for a
        # linear model (where it equals Deep SHAP); the assessment shows whether SHAP earns its cost.
        MethodSpec(
            "gradinput",
            "Gradient × (x − mean background)",
            "autograd (the arm's framework)",
            additive=False,
            sampled=False,
            baseline=True,
        ),
    )
}

SHAP_METHODS = tuple(key for key, spec in METHODS.items() if not spec.baseline)  # explained by default
BASELINE_METHODS = tuple(key for key, spec in METHODS.items() if spec.baseline)  # measured by the assessment

# The model-randomisation check (Adebayo et al. 2018) re-draws the learned weights in these
# scopes; each arm says which of its tensors a scope holds (common.arm.Arm.learned_weights).
RANDOMISATION_SCOPES = {
    "head": "the dense classification head only",
    "all": "every learned weight (kernels, biases, batch-norm scale and shift)",
}

# Which classes' maps the explain stage computes per image (``explain.classes``).
CLASS_SELECTIONS = {
    "predicted": "each model's predicted class",
    "predicted+true": "each model's predicted class, and the true class where the prediction is wrong",
    "all": "every class",
}

OUTPUTS = ("logits", "probability")  # what the maps explain: pre-softmax scores, or probabilities

# Libraries every arm uses, recorded after the arms' own.
COMMON_VERSIONS = (
    ("shap", ("shap",)),
    ("numpy", ("numpy",)),
    ("scikit-learn", ("scikit-learn",)),
    ("scipy", ("scipy",)),
)


def trained_arms() -> list[ArmSpec]:
    """The registered arms that are trained (every one but the twins, ``ArmSpec.weights_of``)."""
    return [spec for spec in ARMS.values() if spec.weights_of is None]


def arm_spec(key: str) -> ArmSpec:
    """The registered arm ``key``.

    Raises:
        KeyError: naming the registered arms.
    """
    try:
        return ARMS[key]
    except KeyError:
        raise KeyError(f"unknown arm {key!r}; registered: {', '.join(ARMS)}") from None


def arm_by_name(name: str) -> ArmSpec:
    """The registered arm whose metrics key / folder is ``name`` (e.g. pytorch_cnn)."""
    for spec in ARMS.values():
        if spec.name == name:
            return spec
    raise KeyError(f"no registered arm is named {name!r}")


def method_spec(key: str) -> MethodSpec:
    """The registered method ``key``.

    Raises:
        ValueError: naming the registered methods.
    """
    try:
        return METHODS[key]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {key!r}") from None


def register_arm(spec: ArmSpec) -> None:
    """Add an arm (a plug-in, or a test's fake). Registering the same spec again is a no-op.

    Raises:
        ValueError: another arm already uses the key or the name, or its design is not one of DESIGNS.
    """
    if spec.design not in DESIGNS:
        raise ValueError(f"arm {spec.key!r}: design must be one of {', '.join(DESIGNS)}, got {spec.design!r}")
    existing = ARMS.get(spec.key)
    if existing == spec:
        return
    if existing is not None or any(s.name == spec.name for s in ARMS.values()):
        raise ValueError(f"an arm with key {spec.key!r} or name {spec.name!r} is already registered")
    ARMS[spec.key] = spec


def map_label(arm: str, method: str) -> str:
    """The label of one set of maps in metrics.json's agreement, e.g. "pytorch_deep"."""
    return f"{arm}_{method}"


def split_map_label(label: str) -> tuple[str, str] | None:
    """ "pytorch_deep" -> ("pytorch", "deep") for registered arms and methods, else None."""
    for arm in ARMS:
        for method in METHODS:
            if label == map_label(arm, method):
                return arm, method
    return None


def map_title(arm: str, method: str) -> str:
    """Display name of one set of maps, e.g. "PyTorch Deep SHAP"; unknown keys as given."""
    framework = ARMS[arm].framework if arm in ARMS else arm
    return f"{framework} {METHODS[method].title if method in METHODS else method}"


def library_versions() -> dict[str, str | None]:
    """Python's and every registered arm's and shared library's installed version (None if missing)."""

    def version(names: tuple[str, ...]) -> str | None:
        for name in names:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    wanted = [label_names for spec in ARMS.values() for label_names in spec.versions] + list(COMMON_VERSIONS)
    return {"python": platform.python_version(), **{label: version(names) for label, names in wanted}}
