"""Execution modules: each module's ``FUNCTIONS`` published under "module.function".

A module may also declare ``TIMEOUTS`` (function -> seconds): how long a job running that
function may take when it gives no ``timeout=`` (``chef_server.reconfigure``: 30 minutes).
Functions it does not list get ``saline.protocol.DEFAULT_FUNCTION_TIMEOUT``; the minion's
``max_function_timeout`` caps both.
"""

import sys as _sys  # the name "sys" is the sys module of this package (sys.doc, ...)
from collections.abc import Callable, Mapping
from types import MappingProxyType, ModuleType
from typing import Any

from minion.modules import (
    chef_backend,
    chef_server,
    cmd,
    elasticsearch,
    etcd,
    file,
    grains,
    pillar,
    postgres,
    preflight,
    service,
    state,
    test,
)
from minion.modules import sys as sys_module

MODULES: dict[str, ModuleType] = {
    "test": test,
    "cmd": cmd,
    "file": file,
    "grains": grains,
    "pillar": pillar,
    "sys": sys_module,
    "service": service,
    "state": state,
    "chef_backend": chef_backend,
    "chef_server": chef_server,
    "elasticsearch": elasticsearch,
    "postgres": postgres,
    "etcd": etcd,
    "preflight": preflight,
}


def registry(modules: Mapping[str, ModuleType] = MODULES) -> dict[str, Callable[..., Any]]:
    """Return every execution function by full name ("test.ping" -> function)."""
    functions: dict[str, Callable[..., Any]] = {}
    for module_name, module in modules.items():
        table: dict[str, Callable[..., Any]] = module.FUNCTIONS
        for short, fn in table.items():
            functions[f"{module_name}.{short}"] = fn
    return functions


#: read-only snapshot of ``registry()`` (the name ``minion.modules.base`` documents)
REGISTRY: Mapping[str, Callable[..., Any]] = MappingProxyType(registry())


def declared_timeout(fn: Callable[..., Any]) -> float | None:
    """Seconds ``fn`` may run when a job gives no ``timeout=``, as the ``TIMEOUTS`` of the
    module defining it declares (plugins' modules too); None when it declares none."""
    module = _sys.modules.get(getattr(fn, "__module__", None) or "")
    table = getattr(module, "TIMEOUTS", None)
    value = table.get(fn) if isinstance(table, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def declared_timeouts(functions: Mapping[str, Callable[..., Any]], cap: float) -> dict[str, float]:
    """Every function with a declared default, by full name, capped at ``cap`` (the
    minion's max_function_timeout): what a hello tells the master, for its deadlines."""
    found = {name: declared_timeout(fn) for name, fn in functions.items()}
    return {name: min(seconds, cap) for name, seconds in found.items() if seconds is not None}
