"""What a figure or a table shows of a study: the arms, methods, images and classes a user
names, checked against what the study holds (:class:`common.errors.ChoiceError` otherwise,
listing what it holds)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from common.errors import ChoiceError
from common.report.names import arm_key, method_title, model_title


def _listed(values: Iterable[object] | object | None) -> list | None:
    """None, one value, or several, as None or a list (a string is one value)."""
    if values is None:
        return None
    if isinstance(values, (str, bytes, int, np.integer)) or not isinstance(values, Iterable):
        return [values]
    return list(values)


def choose_arms(names: Sequence[str], arms: Iterable[str] | str | None) -> list[str]:
    """The arm names (e.g. ``pytorch_cnn``) of ``arms``, each an arm's key (``pytorch``) or name,
    in the study's order; every arm of ``names`` for None.

    Raises
    ------
    ChoiceError
        An arm the study does not hold.
    """
    chosen = _listed(arms)
    if chosen is None:
        return list(names)
    by = {**{arm_key(n): n for n in names}, **{n: n for n in names}}
    unknown = [a for a in chosen if a not in by]
    if unknown:
        held = ", ".join(f"{arm_key(n)} ({model_title(n)})" for n in names) or "none"
        raise ChoiceError(f"arm {unknown[0]!r} is not in this study; its arms: {held}")
    wanted = {by[a] for a in chosen}
    return [n for n in names if n in wanted]


def choose_methods(methods: Sequence[str], chosen: Iterable[str] | str | None) -> list[str]:
    """The method keys of ``chosen`` (e.g. ``deep``), in the order of ``methods``; all for None.

    Raises
    ------
    ChoiceError
        A method the study (or the figure) does not hold.
    """
    wanted = _listed(chosen)
    if wanted is None:
        return list(methods)
    unknown = [m for m in wanted if m not in methods]
    if unknown:
        held = ", ".join(f"{m} ({method_title(m)})" for m in methods) or "none"
        raise ChoiceError(f"method {unknown[0]!r} is not in this study; its methods: {held}")
    return [m for m in methods if m in wanted]


def choose_classes(class_names: Sequence[str], classes: Iterable[str | int] | str | int | None) -> list[int]:
    """The class indices of ``classes``, each a class name or index, in the study's order; all for None.

    Raises
    ------
    ChoiceError
        A class the study does not have.
    """
    chosen = _listed(classes)
    if chosen is None:
        return list(range(len(class_names)))
    found = set()
    for c in chosen:
        if isinstance(c, str) and c in class_names:
            found.add(list(class_names).index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(class_names):
            found.add(int(c))
        else:
            shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
            raise ChoiceError(f"class {c!r} is not one of this study's {len(class_names)} classes ({shown})")
    return sorted(found)


def choose_images(
    true_labels: Sequence[int],
    images: Iterable[int] | int | None = None,
    classes: Sequence[int] | None = None,
) -> np.ndarray:
    """Positions among the N explained images: ``images`` (each from 0 to N-1, as given), or every
    image; of them only those whose true class is one of ``classes`` (class indices) when given.

    Raises
    ------
    ChoiceError
        A position outside 0..N-1, or no image left.
    """
    labels = np.asarray(true_labels).astype(int).ravel()
    n = len(labels)
    chosen = _listed(images)
    if chosen is None:
        positions = np.arange(n)
    else:
        bad = [i for i in chosen if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n]
        if bad:
            raise ChoiceError(f"image {bad[0]!r} is not one of the {n} explained images (positions 0 to {n - 1})")
        positions = np.asarray(chosen, dtype=int)
    if classes is not None:
        positions = positions[np.isin(labels[positions], list(classes))]
    if positions.size == 0:
        raise ChoiceError("no explained image is left to show: none of the chosen images is of the chosen classes")
    return positions
