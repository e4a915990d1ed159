"""The one way secrets are hidden wherever a rendered value leaves a node.

Pillar values tagged ``!secret`` reach a minion with the list of those values; every
result, diff, comment, rendered state (``state.show``), error message and log line built
from them goes through :class:`Masker` before it leaves the minion. Longer secrets are
replaced first, so a secret that contains another is masked whole, not half.
"""

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

#: what a secret is replaced with
MASK = "***"


class Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """``value`` with every secret in its strings (dict keys included) masked; containers
        are copied (tuples and sets become lists, as JSON would make them)."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        return value


#: argument names whose values are secrets wherever they appear (kwargs, nested dicts)
SECRET_NAMES = ("password", "*_password", "passwd", "secret", "*_secret", "token", "*_token")
SECRET_NAMES_EXACT = ("key", "private_key", "api_key")


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_NAMES_EXACT or any(
        fnmatch.fnmatchcase(lowered, pattern) for pattern in SECRET_NAMES
    )


def redact_arguments(
    args: list[Any], kwargs: dict[str, Any], marked: Iterable[str] = ()
) -> tuple[list[Any], dict[str, Any]]:
    """Job arguments as they may be stored, shown and logged: values of arguments named
    like secrets (at any depth) and of those the client ``marked`` (kwarg names, or
    positions as digits) replaced by :data:`MASK`. The job itself carries the real ones."""
    marked = set(marked)
    shown_args = [MASK if str(i) in marked else _redact_names(a) for i, a in enumerate(args)]
    shown_kwargs = {
        k: MASK if k in marked or is_secret_name(k) else _redact_names(v) for k, v in kwargs.items()
    }
    return shown_args, shown_kwargs


def _redact_names(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: MASK if isinstance(k, str) and is_secret_name(k) else _redact_names(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_names(v) for v in value]
    return value
