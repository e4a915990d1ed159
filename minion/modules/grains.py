"""grains.*: the facts this minion reports about itself (used for targeting)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from minion.modules.base import Context

_MISSING = object()


def items(ctx: Context) -> dict[str, Any]:
    """Return all grains."""
    return ctx.grains


def get(ctx: Context, key: str, default: Any = None, delimiter: str = ":") -> Any:
    """Return one grain, or ``default`` when it is absent.

    Args:
        key: grain name; "a:b" looks up key b inside grain a (a number indexes a list).
        default: returned when the key is absent.
        delimiter: separator of nested keys.
    """
    node: Any = ctx.grains
    for part in str(key).split(delimiter):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, Sequence) and not isinstance(node, str | bytes):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                node = _MISSING
        else:
            node = _MISSING
        if node is _MISSING:
            return default
    return node


FUNCTIONS: dict[str, Callable[..., Any]] = {"items": items, "get": get}
