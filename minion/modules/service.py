"""service.*: inspect and control services through the minion's service provider."""

from collections.abc import Callable
from typing import Any

from minion.modules.base import Context


def status(ctx: Context, name: str) -> dict[str, Any]:
    """Return whether a service is running, with its pid and provider detail.

    Args:
        name: service (systemd unit, or a service from the minion config's ``services``).
    """
    return ctx.services.status(name).as_dict()


def start(ctx: Context, name: str) -> dict[str, Any]:
    """Start a service unless it is already running; return its status.

    Args:
        name: service to start.
    """
    return ctx.services.start(name).as_dict()


def stop(ctx: Context, name: str) -> dict[str, Any]:
    """Stop a service (no-op when already stopped); return its status.

    Args:
        name: service to stop.
    """
    return ctx.services.stop(name).as_dict()


def restart(ctx: Context, name: str) -> dict[str, Any]:
    """Stop then start a service; return its new status.

    Args:
        name: service to restart.
    """
    return ctx.services.restart(name).as_dict()


def reload(ctx: Context, name: str) -> dict[str, Any]:
    """Make a running service re-read its configuration (systemd reload; SIGHUP for the
    supervisor); start it when stopped. Return its status.

    Args:
        name: service to reload.
    """
    return ctx.services.reload(name).as_dict()


def enable(ctx: Context, name: str) -> dict[str, Any]:
    """Start a service at boot (systemd); return its status.

    Args:
        name: service to enable.
    """
    return ctx.services.enable(name).as_dict()


def disable(ctx: Context, name: str) -> dict[str, Any]:
    """Do not start a service at boot (systemd); return its status.

    Args:
        name: service to disable.
    """
    return ctx.services.disable(name).as_dict()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "status": status,
    "start": start,
    "stop": stop,
    "restart": restart,
    "reload": reload,
    "enable": enable,
    "disable": disable,
}
