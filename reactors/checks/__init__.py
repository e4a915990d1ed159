"""Cluster checks: named, typed Python functions over the cluster view, called from rules.

A rule's condition and action templates call them as ``check.NAME(...)``::

    when: "check.migration_drift().drifted"
    vars: {major: "{{ check.migration_drift().reference.major }}"}

YAML says *when* and *what*; a check says *how to tell*. A check is a function
``(view: ClusterView, *args, **kwargs) -> result``: it only reads the view (never changes
anything), and returns plain data or a :class:`CheckResult`. Rules pass only the arguments
after ``view``; the engine binds the view of the event being decided.

The built-in checks are listed in :data:`CHECKS`. A distribution adds its own through the
entry-point group ``saline.checks``::

    [project.entry-points."saline.checks"]
    ntp_spread = "saline_ntp.checks:ntp_spread"     # a function (view, ...) -> result

The entry point's name is the check's name. A plugin that cannot be imported, is not
callable, has a name that is not an identifier, or takes a name already in use raises
:class:`CheckError` when the rules load (the master's start, or ``saline reactor reload``):
checks never vanish silently, and a rule calling an unknown check fails at load.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint
from types import MappingProxyType
from typing import Any, Final

import jinja2

from reactors.checks import chef
from reactors.checks.base import Check, CheckError, CheckResult
from reactors.view import ClusterView
from saline.plugins import load_entry_points

__all__ = [
    "CHECKS",
    "ENTRY_POINT_GROUP",
    "Check",
    "CheckError",
    "CheckNamespace",
    "CheckResult",
    "call_problem",
    "load_checks",
    "registry",
]

ENTRY_POINT_GROUP: Final = "saline.checks"

#: the built-in checks, by the name rules call them with
CHECKS: Final[Mapping[str, Check]] = MappingProxyType(
    {
        "migration_drift": chef.migration_drift,
        "pg_leader": chef.pg_leader,
        "pg_leading": chef.pg_leading,
        "config_digest_in_minority": chef.config_digest_in_minority,
        "secrets_mode": chef.secrets_mode,
        "clock_spread": chef.clock_spread,
    }
)


# --- the registry -----------------------------------------------------------------------------


def load_checks(
    found: Iterable[EntryPoint] | None = None, builtins: Mapping[str, Check] = CHECKS
) -> dict[str, Check]:
    """The built-in checks plus those of the entry points ``found`` (default: the installed
    distributions' ``saline.checks`` group), by name.

    :raises CheckError: for the first entry point that fails to import, is not callable, is
        not named like an identifier (``check.NAME`` must be able to reach it), or reuses a
        name; the message names the distribution and the entry point.
    """
    return load_entry_points(ENTRY_POINT_GROUP, builtins, _vet, CheckError, found)


def _vet(name: str, obj: object) -> str | None:
    if not name.isidentifier() or name.startswith("_"):
        return f"{name!r} is not a check name (letters, digits, _)"
    if not callable(obj):
        return f"expected a function (view, ...) -> result, got {obj!r}"
    return None


@functools.cache
def registry() -> Mapping[str, Check]:
    """Every check rules may call: :data:`CHECKS` and the installed plugins (loaded once).

    :raises CheckError: a plugin failed to load (see :func:`load_checks`); not cached, so a
        fixed installation loads on the next call.
    """
    return load_checks()


def _unknown(name: str, table: Mapping[str, Check]) -> str:
    return f"unknown check {name!r} (known checks: {', '.join(sorted(table))})"


def call_problem(
    name: str,
    positional: int | None = None,
    keywords: Iterable[str] = (),
    table: Mapping[str, Check] | None = None,
) -> str | None:
    """Why ``check.NAME(...)`` with that many positional arguments and those keywords cannot
    work (unknown check, or arguments its signature refuses); None if it can. For load-time
    validation: the values are not known yet, only their number and names; ``positional``
    None checks the name only.

    :raises CheckError: a check plugin failed to load (see :func:`registry`).
    """
    table = registry() if table is None else table
    fn = table.get(name)
    if fn is None:
        return _unknown(name, table)
    if positional is None:
        return None
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C callable: its arguments are checked when called
    try:
        signature.bind(None, *[None] * positional, **dict.fromkeys(keywords))
    except TypeError as e:
        return f"check {name}: {e}"
    return None


# --- what rule expressions see as ``check`` ----------------------------------------------------


class _BoundCheck:
    """One check with the view bound: what ``check.NAME`` is in a template."""

    __slots__ = ("_fn", "_name", "_view")

    def __init__(self, name: str, fn: Check, view: ClusterView) -> None:
        self._name, self._fn, self._view = name, fn, view

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, jinja2.Undefined):
                str(value)  # StrictUndefined raises UndefinedError naming what is missing
                raise CheckError(f"check {self._name}: an argument is undefined")
        try:
            return self._fn(self._view, *args, **kwargs)
        except (CheckError, jinja2.UndefinedError):
            raise
        except Exception as exc:  # a check's bug or a bad argument: this rule's error only
            raise CheckError(f"check {self._name} failed: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<check {self._name}>"


class CheckNamespace:
    """What templates see as ``check``: ``check.NAME`` is the check ``NAME`` with the view bound.

    The sandbox refuses underscore attributes, so ``check._view`` is out of reach; an unknown
    name raises :class:`CheckError` naming it (rules are also validated at load).
    """

    __slots__ = ("_table", "_view")

    def __init__(self, view: ClusterView, table: Mapping[str, Check] | None = None) -> None:
        self._view = view
        self._table = table

    def __getattr__(self, name: str) -> _BoundCheck:
        if name.startswith("_"):
            raise AttributeError(name)
        table = registry() if self._table is None else self._table
        fn = table.get(name)
        if fn is None:
            raise CheckError(_unknown(name, table))
        return _BoundCheck(name, fn, self._view)

    def __repr__(self) -> str:
        return "<checks>"
