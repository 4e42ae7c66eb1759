"""What a registry, an index, a gateway or a manifest sends is data, never syntax.

- :func:`parse_json`: JSON with bounds: no ``NaN``/``Infinity``, no number that overflows a
  float (``1e999``) or an int64, at most :data:`MAX_DEPTH` levels of nesting; a problem is one
  line naming the source, never a traceback.
- :func:`size`: a byte count that is an int (not a bool, not a float), not negative, not absurd.
- :func:`printable`: text fit for a terminal: ESC (and so CSI and OSC sequences), the other C0
  and C1 controls, DEL and the bidirectional overrides are shown as ``\\xNN``/``\\uNNNN``
  escapes. Every place that prints text from outside goes through it (``llmkit mirror ls``,
  ``mirror verify``, ``llmkit keys list``, their messages); with rich, the result is printed as a
  ``Text`` (or with ``markup=False``), so ``[`` in a path is not markup either.

The hosts import this module (through :mod:`llmkit.mirror.manifest`) on Python 3.10.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from llmkit.errors import LlmkitError

MAX_DEPTH = 64
MAX_INT = 2**63 - 1
# The largest byte count anything may declare (a file, a layer, a blob): 1 PiB.
MAX_SIZE = 1 << 50
# C0 and C1 controls, DEL, and the Unicode bidirectional controls and separators that can make
# text look like something else on a terminal.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class UntrustedData(LlmkitError):
    """Data from outside that the kit refuses to interpret (exit 2)."""


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number the kit accepts")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise _Refused(f"the number {text[:40]}... is out of range")
    value = int(text)
    if abs(value) > MAX_INT:
        raise _Refused(f"the number {text} is out of range")
    return value


def _depth(doc: Any) -> int:
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse_json(
    data: bytes | str,
    what: str,
    error: Callable[[str], Exception] = UntrustedData,
    not_json: str = "not JSON",
) -> Any:
    """``data`` as JSON within the bounds of this module; ``error(f"{what}: ...")`` otherwise
    (``f"{what}: {not_json} (JSONDecodeError: ...)"`` for what is not JSON at all)."""
    try:
        doc = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise error(f"{what}: {not_json} ({type(exc).__name__}: {printable(exc)[:200]})") from None
    if _depth(doc) > MAX_DEPTH:
        raise error(f"{what}: JSON nested more than {MAX_DEPTH} levels deep")
    return doc


def size(
    value: Any, what: str, error: Callable[[str], Exception] = UntrustedData, limit: int = MAX_SIZE
) -> int:
    """``value`` as a byte count: an int, 0 <= value <= ``limit``; ``error`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what}: the size {printable(repr(value))[:60]} is not a whole number")
    if value < 0:
        raise error(f"{what}: the size {value} is negative")
    if value > limit:
        raise error(f"{what}: the size {value} is more than the {limit} bytes accepted")
    return value


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``value`` as text that cannot drive a terminal (see the module docstring)."""
    text = value if isinstance(value, str) else str(value)
    return _UNPRINTABLE.sub(_escape, text)


def has_unprintable(text: str) -> bool:
    """Whether :func:`printable` would change ``text``."""
    return _UNPRINTABLE.search(text) is not None


__all__ = ["MAX_DEPTH", "MAX_SIZE", "UntrustedData", "has_unprintable", "parse_json", "printable", "size"]
