"""Execution modules: each module's ``FUNCTIONS`` published under "module.function"."""

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
