"""Durations: the one grammar for "how long" in rules, runbooks and configs.

A duration is a finite, non-negative number of seconds, or a string: a number with an
optional unit, ``ms``, ``s`` (the default), ``m``, ``h`` or ``d``, with white space allowed
around it and between number and unit::

    250ms   90s   45   1.5m   5m   2h   1d

:func:`format_duration` writes the short form reasons use (``4m59.5s``, ``1d2h``).
:data:`Duration` and :data:`PositiveDuration` are the pydantic field types.
"""

import math
import re
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field

__all__ = ["Duration", "PositiveDuration", "format_duration", "parse_duration"]

_DURATION_RE: Final = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
#: seconds per unit
UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``1d``, ``250ms``, ``"45"`` or a number.

    :raises ValueError: for anything else, including booleans, negative numbers, NaN and
        infinity (the message contains "duration").
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"duration must be a finite number of seconds, got {value}")
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if isinstance(value, str) and (match := _DURATION_RE.match(value)):
        return float(match.group(1)) * UNITS[match.group(2) or "s"]
    raise ValueError(f"invalid duration {value!r} (use seconds or 30s, 5m, 1h, 1d)")


def format_duration(seconds: float) -> str:
    """Short human form used in reasons: ``5m``, ``1h``, ``12s``, ``4m59.5s``, ``1d2h``."""
    left = round(max(seconds, 0.0), 1)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            count = int(left // size)
            parts.append(f"{count}{unit}")
            left = round(left - count * size, 1)
    if left or not parts:
        parts.append(f"{left:g}s")
    return "".join(parts)


#: seconds, written as a number or as ``250ms`` / ``30s`` / ``5m`` / ``1h`` / ``1d``; zero allowed
Duration = Annotated[float, BeforeValidator(parse_duration)]
#: a :data:`Duration` greater than zero (intervals and timeouts)
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
