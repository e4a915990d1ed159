"""cmd.*: run a command, guarded by ``creates`` / ``unless`` / ``onlyif``, or on a watch.

Commands run through the node's ``cmd.run`` execution function: argv, no shell, unless
``shell: true``. The guards are facts, read before anything runs: ``creates`` paths are
checked on disk, and ``unless`` / ``onlyif`` commands run even in test mode, so they must
only look (``test -f ...``, ``grep -q ...``), never change the node.
"""

import os
from collections.abc import Mapping
from typing import Any

from saline.errors import StateError
from saline.masking import Masker
from states.modules.base import StateContext, StateFunction, StateResult

#: stdout and stderr in ``changes`` keep at most this many characters (the end, where
#: errors are)
OUTPUT_LIMIT = 10_000


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _redact(ctx: StateContext, text: str) -> str:
    return Masker(ctx.secrets).text(text)


def _truncate(text: str) -> str:
    if len(text) <= OUTPUT_LIMIT:
        return text
    return f"[... {len(text) - OUTPUT_LIMIT} characters cut]\n" + text[-OUTPUT_LIMIT:]


def _run(ctx: StateContext, command: str, opts: Mapping[str, Any]) -> dict[str, Any]:
    reply = ctx.call("cmd.run", command, **opts)
    if not isinstance(reply, Mapping) or not isinstance(reply.get("retcode"), int):
        raise StateError(f"cmd.run returned {reply!r}, expected stdout, stderr and retcode")
    return dict(reply)


def _succeeds(ctx: StateContext, command: str, opts: Mapping[str, Any]) -> bool:
    try:
        return bool(_run(ctx, command, opts)["retcode"] == 0)
    except StateError:
        # A check that cannot even run (not found, timed out) has failed, as in Salt.
        return False


def _skip_reason(
    ctx: StateContext,
    opts: Mapping[str, Any],
    creates: str | list[str] | None,
    unless: str | list[str] | None,
    onlyif: str | list[str] | None,
) -> str | None:
    """Why the command need not run, or None when it must."""
    paths = _as_list(creates)
    base = opts.get("cwd") or ""
    if paths and all(os.path.exists(os.path.join(base, p)) for p in paths):
        return f"{', '.join(paths)} already exists"
    checks = _as_list(unless)
    # unless: skip only when every check succeeds; a single failure means "run".
    if checks and all(_succeeds(ctx, c, opts) for c in checks):
        return f"unless condition is true ({'; '.join(checks)} succeeded)"
    for check in _as_list(onlyif):
        if not _succeeds(ctx, check, opts):
            return f"onlyif condition is false ({check} failed)"
    return None


def _execute(ctx: StateContext, name: str, opts: Mapping[str, Any]) -> StateResult:
    try:
        reply = _run(ctx, name, opts)
    except StateError as exc:
        return StateResult(result=False, comment=_redact(ctx, f"cannot run {name}: {exc}"))
    retcode = reply["retcode"]
    changes = {
        "retcode": retcode,
        "stdout": _truncate(_redact(ctx, str(reply.get("stdout", "")))),
        "stderr": _truncate(_redact(ctx, str(reply.get("stderr", "")))),
    }
    if retcode != 0:
        comment = f"command failed with retcode {retcode}: {name}"
        return StateResult(result=False, changes=changes, comment=_redact(ctx, comment))
    return StateResult(result=True, changes=changes, comment=_redact(ctx, f"ran {name}"))


def run(
    ctx: StateContext,
    name: str,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    shell: bool = False,
    unless: str | list[str] | None = None,
    onlyif: str | list[str] | None = None,
    creates: str | list[str] | None = None,
    timeout: float | None = None,
) -> StateResult:
    """Run the command ``name`` unless a guard says it is not needed; succeed on retcode 0.

    Skipped (``result=True``, no changes) when every ``creates`` path exists, when every
    ``unless`` command succeeds, or when any ``onlyif`` command fails. Guards run with
    the same ``cwd``, ``env``, ``shell`` and ``timeout`` as the command.
    changes: ``retcode``, ``stdout``, ``stderr`` (each output cut to its last 10,000 chars).
    """
    opts = {"shell": shell, "cwd": cwd, "env": env, "timeout": timeout}
    reason = _skip_reason(ctx, opts, creates, unless, onlyif)
    if reason is not None:
        return StateResult(result=True, comment=_redact(ctx, f"skipped: {reason}"))
    if ctx.test:
        return StateResult(
            result=None,
            changes={"command": _redact(ctx, name)},
            comment=_redact(ctx, f"would run {name}"),
        )
    return _execute(ctx, name, opts)


def wait(
    ctx: StateContext,
    name: str,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    shell: bool = False,
    unless: str | list[str] | None = None,
    onlyif: str | list[str] | None = None,
    creates: str | list[str] | None = None,
    timeout: float | None = None,
) -> StateResult:
    """Like ``cmd.run``, but the command runs only when a watched state changed.

    On its own this does nothing and succeeds; the watch runs it (guards included).
    """
    return StateResult(result=True, comment="waiting for a watched state to change")


def mod_watch(ctx: StateContext, name: str, sfun: str | None = None, **kwargs: Any) -> StateResult:
    """A watched state changed: run the command, with the state's guards and options."""
    return run(ctx, name, **kwargs)


FUNCTIONS: dict[str, StateFunction] = {"run": run, "wait": wait, "mod_watch": mod_watch}
