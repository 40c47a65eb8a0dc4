"""Every arm, method and map as the report names it, from the registry (unregistered keys as given)."""

from __future__ import annotations

from common import registry


def model_title(name: str) -> str:
    """An arm name (pytorch_cnn) as its title (PyTorch CNN)."""
    try:
        return registry.arm_by_name(name).title
    except KeyError:
        return name


def arm_key(name: str) -> str:
    """An arm name (pytorch_cnn) as its key (pytorch)."""
    try:
        return registry.arm_by_name(name).key
    except KeyError:
        return name


def framework_title(key: str) -> str:
    """An arm key (pytorch) as its framework (PyTorch)."""
    return registry.ARMS[key].framework if key in registry.ARMS else key


def method_title(key: str) -> str:
    """ "deep" -> "Deep SHAP"."""
    return registry.METHODS[key].title if key in registry.METHODS else key


def shap_title(arm: str, method: str) -> str:
    """("pytorch", "deep") -> "PyTorch CNN, Deep SHAP"."""
    arm_title = registry.ARMS[arm].title if arm in registry.ARMS else arm
    return f"{arm_title}, {method_title(method)}"


def explanation_order(key: tuple[str, str]) -> tuple:
    """Report order of (arm key, method key) pairs: registry order of arms, then of methods; unknown keys last."""
    arm, method = key
    arms, methods = list(registry.ARMS), list(registry.METHODS)
    return (
        arms.index(arm) if arm in arms else len(arms),
        arm,
        methods.index(method) if method in methods else len(methods),
        method,
    )


def map_label_title(label: str) -> str:
    """ "pytorch_deep" -> "PyTorch Deep SHAP"."""
    parts = registry.split_map_label(label)
    return registry.map_title(*parts) if parts else label


def map_pair_title(pair: str) -> str:
    """ "pytorch_deep~keras_deep" -> "PyTorch Deep SHAP vs Keras Deep SHAP"."""
    return " vs ".join(map_label_title(label) for label in pair.split("~", 1))
