"""The one way secrets are hidden wherever a value leaves a node or reaches a store.

One walk, :meth:`Masker.value` (or :func:`mask`), serves every caller:

* by value: every occurrence of each known secret in every string, mapping keys included, at
  any depth, is replaced by :data:`MASK`. Pillar values tagged ``!secret`` reach a minion with
  the list of those values; every result, diff, comment, rendered state (``state.show``),
  error message and log line built from them goes through it before it leaves the minion, as
  do execution functions that hold a secret argument (``chef_server.user_create``). Longer
  secrets are replaced first, so a secret that contains another is masked whole, not half.
* by name (``by_name=True``): the whole value under a mapping key named like a secret
  (:func:`is_secret_name`) is replaced; :func:`redact_arguments` stores and shows job
  arguments this way.
"""

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MASK",
    "SECRET_NAMES",
    "SECRET_NAMES_EXACT",
    "Masker",
    "is_secret_name",
    "mask",
    "redact_arguments",
]

#: what a secret is replaced with, everywhere
MASK = "***"

#: argument names whose values are secrets wherever they appear (kwargs, nested dicts)
SECRET_NAMES = ("password", "*_password", "passwd", "secret", "*_secret", "token", "*_token")
SECRET_NAMES_EXACT = ("key", "private_key", "api_key")


def is_secret_name(name: str) -> bool:
    """True if a value called ``name`` (any case) is a secret: ``password``, ``db_password``,
    ``api_token``, ``key``..."""
    lowered = name.lower()
    return lowered in SECRET_NAMES_EXACT or any(
        fnmatch.fnmatchcase(lowered, pattern) for pattern in SECRET_NAMES
    )


class Masker:
    """Masks ``secrets`` (by value) and, with ``by_name``, values named like secrets."""

    def __init__(self, secrets: Iterable[str] = (), *, by_name: bool = False) -> None:
        #: longest first, so a secret containing another is masked whole; empty ones dropped
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.by_name = by_name

    def text(self, text: str) -> str:
        """``text`` with every occurrence of every secret replaced by :data:`MASK`."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """``value`` with every secret in its strings (dict keys included) masked, and with
        ``by_name`` every value under a key named like a secret replaced by :data:`MASK`;
        containers are copied (tuples and sets become lists, as JSON would make them).
        Nothing to mask: ``value`` itself is returned."""
        if not self.secrets and not self.by_name:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                (self.text(k) if isinstance(k, str) else k): (
                    MASK if self._named_secret(k) else self.value(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        return value

    def _named_secret(self, key: Any) -> bool:
        return self.by_name and isinstance(key, str) and is_secret_name(key)


def mask(value: Any, secrets: Iterable[str] = (), *, by_name: bool = False) -> Any:
    """``value`` as it may leave the node: see :meth:`Masker.value`."""
    return Masker(secrets, by_name=by_name).value(value)


def redact_arguments(
    args: list[Any], kwargs: dict[str, Any], marked: Iterable[str] = ()
) -> tuple[list[Any], dict[str, Any]]:
    """Job arguments as they may be stored, shown and logged: values of arguments named
    like secrets (at any depth) and of those the client ``marked`` (kwarg names, or
    positions as digits) replaced by :data:`MASK`. The job itself carries the real ones."""
    marked = set(marked)
    masker = Masker(by_name=True)
    shown_args = [MASK if str(i) in marked else masker.value(a) for i, a in enumerate(args)]
    shown_kwargs: dict[str, Any] = masker.value(
        {k: MASK if k in marked else v for k, v in kwargs.items()}
    )
    return shown_args, shown_kwargs
