"""The Chef HA formula's cluster checks: how to tell, across nodes, that something is off.

Each is a pure function of the cluster view (and its arguments) that the shipped rules
(``reactors/rules/chef_ha.yaml``) call as ``check.NAME(...)``. Groups are the formula's
grains: backends ``G@role:backend``, frontends ``G@role:frontend``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from reactors.checks.base import CheckError, CheckResult
from reactors.view import ClusterView
from saline.migration_level import MigrationLevel, MigrationLevelError, compare_levels, parse_level

__all__ = [
    "MigrationDrift",
    "clock_spread",
    "config_digest_in_minority",
    "migration_drift",
    "pg_leader",
    "secrets_mode",
]

BACKENDS: Final = "G@role:backend"
FRONTENDS: Final = "G@role:frontend"
#: frontends an operator named as the reference (grain ``chef_migration_reference: true``)
PINNED_FRONTENDS: Final = "G@role:frontend and G@chef_migration_reference:[Tt]rue"


def _by_id(ids: Iterable[str]) -> list[str]:
    # the order the rules' Jinja used (dictsort: case-insensitive, stable)
    return sorted(ids, key=str.lower)


# --- frontends: migration level -----------------------------------------------------------------


@dataclass(frozen=True)
class MigrationDrift(CheckResult):
    """The frontends' migration levels against the reference level."""

    #: the level every frontend should have; None when no frontend reported a valid one
    reference: MigrationLevel | None
    #: the frontend the reference was taken from (the first one, when several have it)
    source: str | None
    #: True when ``source`` has grain ``chef_migration_reference`` (else: the highest level)
    pinned: bool
    #: frontends that reported another level or none (file missing or invalid), by id;
    #: empty when there is no reference (nothing to copy)
    drifted: tuple[str, ...]
    #: each reporting frontend's level (None: no valid level); frontends that have not
    #: reported yet are left out
    levels: dict[str, MigrationLevel | None]
    #: a sentence saying what was found
    reason: str


def _level_or_none(value: Any) -> MigrationLevel | None:
    if value is None:
        return None
    try:
        return parse_level(value)
    except MigrationLevelError:
        return None  # as the beacon's "invalid": no level


def _levels(view: ClusterView, group: str) -> dict[str, MigrationLevel | None]:
    """Each reporting member's level (None: none, or not a valid one)."""
    reported = view.values(group, "migration_level", "level")
    return {fe: _level_or_none(value) for fe, value in reported.items()}


def migration_drift(view: ClusterView) -> MigrationDrift:
    """Which frontends' migration level differs from the reference level.

    The reference is the level of the frontend whose grain ``chef_migration_reference`` is
    true, if one is configured and has a level; otherwise the highest ``[major, minor]`` any
    frontend reported (what the last upgrade wrote). Every frontend that reported another level,
    or none (the file missing or invalid), is drifted; one that has not reported yet is left
    out. Levels compare with :func:`saline.migration_level.compare_levels`, as on the minion.
    """
    levels = _levels(view, FRONTENDS)
    pinned = [(fe, lv) for fe, lv in _levels(view, PINNED_FRONTENDS).items() if lv is not None]
    known = [(fe, lv) for fe, lv in levels.items() if lv is not None]
    if pinned:
        source, reference = pinned[0]
    elif known:
        by_level = functools.cmp_to_key(compare_levels)
        reference = max((level for _, level in known), key=by_level)
        source = next(fe for fe, level in known if compare_levels(level, reference) == 0)
    else:
        reason = (
            "no frontend reported a valid migration level" if levels else "no frontend reported"
        )
        return MigrationDrift(None, None, False, (), levels, reason)
    drifted = tuple(
        fe
        for fe in _by_id(levels)
        if (level := levels[fe]) is None or compare_levels(level, reference) != 0
    )
    how = "grain chef_migration_reference" if pinned else "the highest level"
    found = (
        ", ".join(f"{fe} at {levels[fe] or 'no valid level'}" for fe in drifted)
        if drifted
        else "every frontend at it"
    )
    reason = f"reference {reference} from {source} ({how}); {found}"
    return MigrationDrift(reference, source, bool(pinned), drifted, levels, reason)


# --- backends: PostgreSQL leader ----------------------------------------------------------------


def pg_leader(view: ClusterView) -> str:
    """The backend whose ``pg_replication`` beacon says it leads now (state ``leader``); if
    none does, the one last seen with the role ``leader`` (the first by id).

    :raises CheckError: no backend reports it, or more than one says now that it leads (a
        split brain). An action that needs the leader then cannot be built, and its rule
        escalates rather than guess.
    """
    leading = pg_leading(view)
    if len(leading) > 1:  # a split brain: healing against either could be the wrong one
        raise CheckError(f"more than one backend says its PostgreSQL leads: {', '.join(leading)}")
    if leading:  # after a failover the old leader, down, still has the role it last had
        return leading[0]
    roles = view.values(BACKENDS, "pg_replication", "role")
    for backend in _by_id(roles):
        if roles[backend] == "leader":
            return backend
    raise CheckError("no backend reports the PostgreSQL leader role (beacon pg_replication)")


def pg_leading(view: ClusterView) -> list[str]:
    """The backends whose ``pg_replication`` beacon says, now, that they lead (state
    ``leader``; a leader that went down keeps its last role but not that state)."""
    states = view.values(BACKENDS, "pg_replication", "state")
    return _by_id(b for b, state in states.items() if state == "leader")


# --- backends: chef-backend.rb settings ---------------------------------------------------------


def config_digest_in_minority(view: ClusterView, digest: Any) -> bool:
    """True if fewer than half of the backends that reported a ``config_drift`` digest
    report ``digest`` (a backend whose settings differ from most others'); False for no
    digest (None or empty)."""
    if not digest:
        return False
    digests = view.values(BACKENDS, "config_drift", "digest")
    same = sum(1 for other in digests.values() if other == digest)
    return same * 2 < len(digests)


# --- backends: secrets files --------------------------------------------------------------------


def secrets_mode(view: ClusterView, path: str) -> str:
    """The mode the reference's table gives the secrets file ``path``: ``0640`` for
    ``/etc/chef-backend/secrets.json``, ``0600`` for the others (``leaderl/data/sys.config``,
    ``recovery.conf``). The view is not consulted."""
    if not isinstance(path, str):
        raise CheckError(f"secrets_mode: path must be text, got {path!r}")
    return "0640" if path.endswith("/secrets.json") else "0600"


# --- clocks -------------------------------------------------------------------------------------


def clock_spread(view: ClusterView) -> float:
    """Seconds between the largest and the smallest clock offset the backends' ``time_drift``
    beacons reported (each against its time source); 0.0 with fewer than two offsets.
    Backends without a measured offset (``unreachable``) are left out."""
    offsets = [
        float(value)
        for value in view.values(BACKENDS, "time_drift", "offset").values()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ]
    if len(offsets) < 2:
        return 0.0
    return max(offsets) - min(offsets)
