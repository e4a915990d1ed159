"""What every cluster check shares: its type, its error and the base of its results."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from saline.errors import SalineError

__all__ = ["Check", "CheckError", "CheckResult"]

#: a check: ``(view, *args, **kwargs) -> result``; reads the view, never changes anything
Check = Callable[..., Any]


class CheckError(SalineError):
    """A check is unknown, failed, or a check plugin failed to load (the message names it)."""


class CheckResult(Mapping[str, Any]):
    """Base of a check's result, a frozen dataclass: attributes for templates
    (``check.migration_drift().drifted``) and a read-only mapping of the fields, so a whole
    result (``{{ check.migration_drift() }}``) renders into action data as a plain dict."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    def _field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
