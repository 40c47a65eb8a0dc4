"""Text for the reports: numbers, p-values and estimates as the templates print them, and Markdown escaping.

Markdown's special characters in user strings are backslash-escaped by :func:`md_escape`, the
Markdown environment's finalizer; :class:`Verbatim` marks text that is already safe (a link
target, a code block, our own numbers).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from common.results import Estimate


class Verbatim(str):
    """Text already safe for Markdown: a link target, a fenced code block, our own numbers."""


# Markdown's active characters; "_" only at a word edge (GitHub ignores intraword "_"),
# "&" only where it would start an entity such as "&lt;".
MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|&(?=#?\w+;))")


def md_escape(value: Any) -> str:
    """Finalizer of the Markdown environment: every ``{{ value }}`` is printed on one line
    with Markdown's special characters backslash-escaped, so a class named ``*a*|<b>``
    shows as written and cannot break a table or inject HTML."""
    if isinstance(value, Verbatim):
        return value
    if value is None:
        return ""
    text = MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    return "\\" + text if text[:1] in ("-", "+") else text


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_number(x: Any, spec: str) -> Verbatim:
    """``format(x, spec)`` for finite numbers, an em dash for missing or undefined values
    (our own text, so the Markdown escaper leaves its "-" alone)."""
    return Verbatim(format(x, spec) if is_number(x) else "—")


def fmt_p(p: Any) -> Verbatim:
    """A p-value with its relation sign: "< 0.001" or "= 0.123" (the templates write "p {{ p }}")."""
    if not is_number(p):
        return Verbatim("= —")
    return Verbatim("< 0.001" if p < 0.001 else f"= {p:.3f}")


def fmt_estimate(e: Estimate | None, spec: str = ".3f") -> Verbatim:
    """A mean with its 95% interval: "0.109 [0.092, 0.125]"; "—" when undefined."""
    if e is None or not is_number(e.mean):
        return Verbatim("—")
    low, high = (e.ci95 + [None, None])[:2]
    return Verbatim(f"{fmt_number(e.mean, spec)} [{fmt_number(low, spec)}, {fmt_number(high, spec)}]")


def code_block(text: str, lang: str) -> Verbatim:
    """A fenced Markdown code block whose fence is longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return Verbatim(f"{fence}{lang}\n{text}\n{fence}")


def code_span(text: Any) -> Verbatim:
    """Inline Markdown code whose backtick fence is longer than any backtick run inside (— for None)."""
    if text is None:
        return Verbatim("—")
    text = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Verbatim(f"{fence}{pad}{text}{pad}{fence}")
