"""service.*: keep a service running or stopped, and restart it when a watched state changes.

Everything goes through the node's ``service.*`` execution functions, so the same states
drive systemd and saline's own supervisor. A failed action (the service does not start,
an unknown service) comes back as ``result=False`` with the provider's message.
"""

from collections.abc import Mapping
from typing import Any

from saline.errors import StateError
from states.modules.base import StateContext, StateFunction, StateResult


def _status(ctx: StateContext, fun: str, name: str) -> dict[str, Any]:
    """Call a ``service.*`` function; each returns the service's status as a dict."""
    status = ctx.call(fun, name)
    if not isinstance(status, Mapping) or "running" not in status:
        raise StateError(f"{fun} {name}: expected a service status, got {status!r}")
    return dict(status)


def _describe(status: Mapping[str, Any]) -> str:
    if status["running"]:
        return f"running (pid {status['pid']})" if status.get("pid") else "running"
    return f"stopped ({status['detail']})" if status.get("detail") else "stopped"


def _boot_plan(status: Mapping[str, Any], enable: bool | None) -> tuple[dict[str, Any], str]:
    """(changes, note) for the boot-time setting; the note explains when it is unmanaged."""
    if enable is None or status.get("enabled") == enable:
        return {}, ""
    if status.get("enabled") is None:
        # The supervisor has no notion of boot: say so rather than pretend it is set.
        return {}, "; enable not managed: the service provider does not report it"
    return {"enabled": enable}, ""


def _converge(ctx: StateContext, name: str, want_running: bool, enable: bool | None) -> StateResult:
    verb = "start" if want_running else "stop"
    try:
        status = _status(ctx, "service.status", name)
        changes, note = _boot_plan(status, enable)
        if status["running"] != want_running:
            changes = {"running": want_running, **changes}
        if not changes:
            return StateResult(
                result=True, comment=f"service {name} is already {_describe(status)}{note}"
            )
        if ctx.test:
            actions = [f"{verb} service {name}"] if "running" in changes else []
            if "enabled" in changes:
                actions.append(f"{'enable' if enable else 'disable'} it at boot")
            return StateResult(
                result=None, changes=changes, comment=f"would {' and '.join(actions)}"
            )
        if "running" in changes:
            after = _status(ctx, f"service.{verb}", name)
            if after["running"] != want_running:
                return StateResult(
                    result=False,
                    comment=f"service {name} did not {verb}: it is {_describe(after)}",
                )
            if want_running:
                changes["pid"] = after.get("pid")
        done = ["started" if want_running else "stopped"] if "running" in changes else []
        if "enabled" in changes:
            ctx.call("service.enable" if enable else "service.disable", name)
            done.append(f"{'enabled' if enable else 'disabled'} at boot")
        return StateResult(
            result=True, changes=changes, comment=f"service {name}: {' and '.join(done)}{note}"
        )
    except StateError as exc:
        return StateResult(result=False, comment=f"service {name}: {exc}")


def running(
    ctx: StateContext, name: str, enable: bool | None = None, reload: bool = False
) -> StateResult:
    """Ensure a service is running (started if not); with ``enable``, also set it at boot.

    ``reload: true`` makes a watch reload the service instead of restarting it.
    changes: ``running``, ``pid``, ``enabled``.
    """
    return _converge(ctx, name, True, enable)


def dead(ctx: StateContext, name: str, enable: bool | None = None) -> StateResult:
    """Ensure a service is stopped; with ``enable``, also set it at boot.

    changes: ``running``, ``enabled``.
    """
    return _converge(ctx, name, False, enable)


def mod_watch(
    ctx: StateContext,
    name: str,
    sfun: str = "running",
    reload: bool = False,
    enable: bool | None = None,
    **kwargs: Any,
) -> StateResult:
    """A watched state changed: restart (or reload) the service if it runs, else start it.

    For a ``service.dead`` state (``sfun: dead``) this only makes sure it is stopped.
    changes: ``restarted`` (or ``reloaded``), ``old_pid``, ``pid``.
    """
    if sfun == "dead":
        return dead(ctx, name, enable=enable)
    try:
        status = _status(ctx, "service.status", name)
    except StateError as exc:
        return StateResult(result=False, comment=f"service {name}: {exc}")
    if not status["running"]:
        return running(ctx, name, enable=enable)
    action = "reload" if reload else "restart"
    changes: dict[str, Any] = {f"{action}ed": True, "old_pid": status.get("pid")}
    if ctx.test:
        return StateResult(
            result=None, changes=changes, comment=f"would {action} service {name} (watch)"
        )
    try:
        after = _status(ctx, f"service.{action}", name)
    except StateError as exc:
        return StateResult(result=False, comment=f"service {name}: {action} failed: {exc}")
    if not after["running"]:
        return StateResult(
            result=False,
            changes=changes,
            comment=f"service {name} is {_describe(after)} after {action}",
        )
    changes["pid"] = after.get("pid")
    return StateResult(
        result=True, changes=changes, comment=f"{action}ed service {name}: {_describe(after)}"
    )


FUNCTIONS: dict[str, StateFunction] = {"running": running, "dead": dead, "mod_watch": mod_watch}
