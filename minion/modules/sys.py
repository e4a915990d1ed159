"""sys.*: introspection of the execution functions this minion offers."""

import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from minion.modules.base import Context
from saline.errors import ExecutionError


def list_functions(ctx: Context, pattern: str = "*") -> list[str]:
    """Return the sorted names of the available functions.

    Args:
        pattern: shell-style glob on the full name, e.g. "file.*".
    """
    return sorted(name for name in ctx.functions if fnmatch.fnmatchcase(name, pattern))


def doc(ctx: Context, name: str | None = None) -> dict[str, str]:
    """Return the documentation of functions, keyed by full name.

    Args:
        name: a function ("cmd.run"), a module ("cmd" or "cmd.*"), a glob, or nothing for all.
    """
    if name is None or name == "":
        names = list(ctx.functions)
    elif name in ctx.functions:
        names = [name]
    else:
        prefix = name.removesuffix(".*") + "."
        names = [fn for fn in ctx.functions if fn.startswith(prefix)]
        if not names:
            names = [fn for fn in ctx.functions if fnmatch.fnmatchcase(fn, name)]
        if not names:
            raise ExecutionError(f"no such function or module: {name}")
    return {fn: inspect.getdoc(ctx.functions[fn]) or "" for fn in sorted(names)}


def state_doc(ctx: Context, name: str | None = None) -> dict[str, str]:
    """Return the documentation of state functions (what a state file may use), by name.

    Args:
        name: a state function ("file.managed"), a module ("file"), a glob, or nothing.
    """
    from states.modules import REGISTRY  # the state engine, imported only when asked

    states = {
        f"{module}.{fun}": fn
        for module, table in REGISTRY.items()
        for fun, fn in table.items()
        if fun != "mod_watch"
    }
    if not name:
        chosen = sorted(states)
    elif name in states:
        chosen = [name]
    else:
        prefix = name.removesuffix(".*") + "."
        chosen = sorted(s for s in states if s.startswith(prefix) or fnmatch.fnmatchcase(s, name))
        if not chosen:
            raise ExecutionError(f"no such state function or module: {name}")
    return {state: inspect.getdoc(states[state]) or "" for state in chosen}


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "list_functions": list_functions,
    "doc": doc,
    "state_doc": state_doc,
}
