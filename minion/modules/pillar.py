"""pillar.*: this minion's pillar, as the master compiles it for the job, secrets masked.

The pillar is asked of the master on each call (it is never cached on disk). Values the
pillar tags ``!secret`` come back as ``***``: a return is stored and shown on the master,
and a secret must not travel back in it.
"""

from collections.abc import Callable
from typing import Any

from minion.modules.base import Context
from saline.errors import ExecutionError, SalineError
from saline.masking import Masker

_MISSING = object()


def fetch(ctx: Context) -> tuple[dict[str, Any], frozenset[str]]:
    """This minion's pillar and its secret values, asked of the master for this job."""
    if ctx.channel is None:
        raise ExecutionError("the pillar comes from the master: run this as a job")
    try:
        reply = ctx.channel.request("pillar")  # raises with the master's error, if any
    except SalineError as e:
        raise ExecutionError(f"cannot get pillar: {e}") from e
    return dict(reply.get("pillar") or {}), frozenset(reply.get("secrets") or [])


def _pillar(ctx: Context) -> tuple[dict[str, Any], Masker]:
    pillar, secrets = fetch(ctx)
    return pillar, Masker(secrets)


def items(ctx: Context) -> dict[str, Any]:
    """Return this minion's whole pillar (secret values as ``***``)."""
    pillar, masker = _pillar(ctx)
    masked: dict[str, Any] = masker.value(pillar)
    return masked


def get(ctx: Context, key: str, default: Any = None, delimiter: str = ":") -> Any:
    """Return one pillar value (secret values as ``***``).

    Args:
        key: a key, nested keys joined by the delimiter ("chef_ha:backends").
        default: returned when the key is missing.
        delimiter: separates nested keys.
    """
    pillar, masker = _pillar(ctx)
    value: Any = pillar
    for part in str(key).split(delimiter):
        value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is _MISSING:
            return default
    return masker.value(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {"items": items, "get": get}
