"""Dataclass trees to and from plain JSON: what metrics.json and the stage files hold.

:func:`to_json` writes a tree of dataclasses (and dicts, lists, NumPy scalars and arrays) as plain
JSON values, leaving out fields marked :data:`OMIT_NONE` while they are None; :func:`from_json`
reads such values back into the same types, checking required fields.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

import numpy as np

OMIT_NONE = {"omit_none": True}  # field metadata: not written while None

T = TypeVar("T")


def to_json(obj: Any) -> Any:
    """A dataclass tree as plain JSON values (dicts, lists, str, int, float, bool, None)."""
    if hasattr(obj, "to_json") and dataclasses.is_dataclass(obj):
        return obj.to_json()
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = to_json(value)
        order = getattr(type(obj), "JSON_ORDER", None)
        return {k: out[k] for k in order if k in out} if order else out
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def from_json(cls: type[T], values: Any) -> T:
    """Read :func:`to_json`'s output back into ``cls`` (a dataclass of this module).

    Raises:
        ValueError: a required field is missing.
    """
    return _convert(cls, values, cls.__name__)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if hasattr(tp, "from_json"):
            return tp.from_json(value)
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _convert(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}: missing field {f.name!r}")
        return tp(**kwargs)
    if origin is dict:
        _, value_type = typing.get_args(tp)
        return {k: _convert(value_type, v, f"{where}[{k}]") for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(tp)
        return [_convert(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
