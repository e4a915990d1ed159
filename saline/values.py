"""What data from the network may hold: JSON-shaped values, bounded in depth and size.

msgpack carries more than JSON can (bin, ext types, timestamps, non-str keys) and nests as
deep as its parser allows. Event data, grains and return values are stored, rendered into
rules and shown as JSON, so anything else is refused at intake, naming where it is.
"""

import math
from typing import Any

from saline.wire import pack

#: nesting a value may have (a dict or list inside a dict is depth 2)
DEFAULT_MAX_DEPTH = 32

_SCALARS = (str, bool, int, float, type(None))


def shape_problem(
    value: Any, max_depth: int = DEFAULT_MAX_DEPTH, *, allow_bytes: bool = False
) -> str | None:
    """Why ``value`` is not a JSON-shaped value (a path and a sentence); None if it is.

    Walks iteratively (no recursion limit to hit); floats must be finite (JSON has no NaN).
    ``allow_bytes`` admits bin values too (a return of ``file.read`` with ``binary: true``).
    """
    scalars = (*_SCALARS, bytes) if allow_bytes else _SCALARS
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            children: list[tuple[Any, str]] = []
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"{path or 'top'}: key of type {type(key).__name__}, not text"
                children.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            children = [(child, f"{path}[{i}]") for i, child in enumerate(item)]
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{path or 'top'}: {item} is not a JSON number"
            continue
        elif isinstance(item, scalars):
            continue
        else:
            return f"{path or 'top'}: {type(item).__name__} is not a JSON value"
        if children and depth >= max_depth:
            return f"{path or 'top'}: nested deeper than {max_depth} levels"
        stack.extend((child, child_path, depth + 1) for child, child_path in children)
    return None


def value_problem(value: Any, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> str | None:
    """:func:`shape_problem`, then a cap on the value's packed size in bytes."""
    problem = shape_problem(value, max_depth)
    if problem is not None:
        return problem
    size = len(pack(value))
    if size > max_bytes:
        return f"{size} bytes exceed the cap of {max_bytes}"
    return None
