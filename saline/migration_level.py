"""Chef Infra Server migration levels: what one is, and how two compare.

A frontend's ``/var/opt/opscode/upgrades/migration-level`` holds ``{"major": M, "minor": m}``;
the ``migration_level`` beacon publishes it as ``[M, m]``. The minion (execution module
``chef_server``) and the master (reactor check ``migration_drift``) both compare levels, so the
one definition lives here, in the kernel both may import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from saline.errors import SalineError

__all__ = ["MigrationLevel", "MigrationLevelError", "compare_levels", "level_part", "parse_level"]


class MigrationLevelError(SalineError, ValueError):
    """A value is not a migration level (message names the part that is wrong)."""


class MigrationLevel(NamedTuple):
    """``major.minor``; tuples order as levels do (``(3, 9) < (3, 13) < (4, 0)``)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def level_part(value: Any, field: str) -> int:
    """``value`` as a non-negative integer: an int, or ASCII digits (surrounding blanks allowed).

    :raises MigrationLevelError: anything else (booleans, floats, negatives, None), naming
        ``field``.
    """
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MigrationLevelError(f"{field} must be a non-negative integer, got {value!r}")


def parse_level(value: Any) -> MigrationLevel:
    """A level from a mapping with ``major`` and ``minor`` (the file, or a return of
    ``chef_server.migration_level``) or a ``[major, minor]`` pair (the beacon's ``level``).

    :raises MigrationLevelError: ``value`` is neither, or a part is not a non-negative integer
        (a missing file's ``{"major": None, ...}`` included).
    """
    if isinstance(value, Mapping):
        return MigrationLevel(
            level_part(value.get("major"), "major"), level_part(value.get("minor"), "minor")
        )
    if isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == 2:
        return MigrationLevel(level_part(value[0], "major"), level_part(value[1], "minor"))
    raise MigrationLevelError(
        f"a migration level is {{major, minor}} or [major, minor], got {value!r}"
    )


def compare_levels(a: Any, b: Any) -> int:
    """Compare two levels (anything :func:`parse_level` reads); pure.

    :returns: -1 when ``a`` is older than ``b``, 0 when equal, 1 when newer.
    :raises MigrationLevelError: either is not a level.
    """
    left, right = parse_level(a), parse_level(b)
    return (left > right) - (left < right)
