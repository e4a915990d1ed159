"""test.*: liveness and plumbing checks that touch nothing on the host."""

import time
from collections.abc import Callable
from typing import Any

import saline
from minion.modules.base import Context
from saline.errors import ExecutionError


def ping(ctx: Context) -> bool:
    """Return True: proves the minion is connected and executing jobs."""
    return True


def echo(ctx: Context, text: str) -> str:
    """Return ``text`` unchanged.

    Args:
        text: any string.
    """
    return text


def sleep(ctx: Context, seconds: float | str) -> bool:
    """Sleep, then return True (exercises job timeouts and concurrency).

    Args:
        seconds: how long to sleep, >= 0.
    """
    try:
        duration = float(seconds)
    except (TypeError, ValueError) as exc:
        raise ExecutionError(f"seconds must be a number, got {seconds!r}") from exc
    if not duration >= 0:  # also rejects NaN
        raise ExecutionError(f"seconds must be >= 0, got {seconds!r}")
    time.sleep(duration)
    return True


def version(ctx: Context) -> str:
    """Return the saline version of this minion."""
    return saline.__version__


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ping": ping,
    "echo": echo,
    "sleep": sleep,
    "version": version,
}
