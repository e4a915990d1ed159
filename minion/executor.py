"""Run one execution function in a forked child, under a timeout, and build its Return.

Forking keeps the minion alive and responsive whatever the function does: a function that
raises, hangs, or leaks is confined to its child. On timeout the child gets SIGTERM, which
raises :class:`JobTimeout` inside the function so that it can stop what it started (``cmd.run``
kills its command's session); after ``KILL_GRACE`` seconds, or once it has exited, the
child's whole process group is killed. The result comes back as msgpack over a pipe.

The time limit (:func:`function_timeout`) is the job's ``timeout``, or, when the caller gave
none, the default the function's module declares (``minion.modules.declared_timeout``),
never more than the minion's ``max_function_timeout``.
"""

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack

from minion.channel import PipeChannel, Relay, serve_child
from minion.modules import declared_timeout
from minion.modules.base import Context, Outcome
from saline.errors import ExecutionError
from saline.protocol import DEFAULT_FUNCTION_TIMEOUT, KILL_GRACE, TIMEOUT_RETCODE, Job, Return


class JobTimeout(BaseException):
    """Raised in a job's child on SIGTERM: its time is up. A BaseException, so that only
    cleanup (``finally``, ``except BaseException``) runs, never an ordinary error handler."""


def function_timeout(ctx: Context, job: Job) -> float:
    """Seconds ``job``'s function may run on this minion.

    The job's ``timeout``; when the caller gave none (``default_timeout``), the default the
    function's module declares, or ``DEFAULT_FUNCTION_TIMEOUT``, at most ``timeout``.
    Never more than the minion's ``max_function_timeout``.
    """
    limit = job.timeout
    if job.default_timeout:
        fn = ctx.functions.get(job.fun)
        declared = declared_timeout(fn) if fn is not None else None
        limit = min(declared or DEFAULT_FUNCTION_TIMEOUT, job.timeout)
    return min(limit, ctx.config.max_function_timeout)


def _error(kind: str, message: str) -> dict[str, str]:
    return {"error": kind, "message": message}


def _job_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The job's keyword arguments for ``fn``: ``timeout=`` is the job's time limit, passed
    on only to a function that takes a ``timeout`` itself (``cmd.run``)."""
    if "timeout" not in kwargs:
        return kwargs
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return kwargs
    if any(p.name == "timeout" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    return {k: v for k, v in kwargs.items() if k != "timeout"}


def call_function(ctx: Context, job: Job) -> tuple[bool, int, Any]:
    """Run the function in this process: (success, retcode, return). Never raises an
    Exception (a :class:`JobTimeout` goes through)."""
    fn: Callable[..., Any] | None = ctx.functions.get(job.fun)
    if fn is None:
        return False, 254, _error("unknown_function", f"no function {job.fun!r} on this minion")
    job = job.model_copy(update={"kwargs": _job_kwargs(fn, job.kwargs)})
    wrong = _argument_problem(fn, job)
    if wrong is not None:
        return False, 1, _error("bad_arguments", wrong)
    try:
        value = fn(ctx, *job.args, **job.kwargs)
    except ExecutionError as e:
        return False, 1, _error("execution_error", str(e))
    except TypeError as e:
        # almost always a wrong argument list from the operator
        return False, 1, _error("bad_arguments", f"{job.fun}: {e}")
    except Exception as e:
        tb = traceback.format_exc(limit=5)
        return False, 1, _error(type(e).__name__, f"{e}\n{tb}")
    if isinstance(value, Outcome):
        return value.retcode == 0, value.retcode, value.value
    return True, 0, value


def _argument_problem(fn: Callable[..., Any], job: Job) -> str | None:
    """The operator's arguments checked against the function's own, in the operator's
    terms (Python would count the context too: "takes 2 positional arguments but 4...")."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, *job.args, **job.kwargs)
    except TypeError as e:
        params = list(signature.parameters.values())[1:]  # without the context
        usage = " ".join(
            p.name.upper()
            if p.default is inspect.Parameter.empty and p.kind in _POSITIONAL
            else f"[{p.name}=]"
            if p.kind is not inspect.Parameter.VAR_KEYWORD
            else f"[{p.name.upper()}...]"
            for p in params
            if p.kind is not inspect.Parameter.VAR_POSITIONAL
        )
        given = [repr(a) for a in job.args] + [f"{k}={v!r}" for k, v in job.kwargs.items()]
        got = ", ".join(given) or "no arguments"
        head = f"{job.fun} {usage}" if usage else job.fun
        return f"{head}: {e}; you gave {len(given)}: {got}"
    return None


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _pack_result(result: tuple[bool, int, Any]) -> bytes:
    def fallback(obj: object) -> object:
        if isinstance(obj, set | frozenset | tuple):
            return list(obj)
        return repr(obj)

    data: bytes = msgpack.packb(list(result), use_bin_type=True, default=fallback)
    return data


def _time_is_up(signum: int, frame: object) -> None:
    raise JobTimeout


def _child(ctx: Context, job: Job, write_fd: int) -> None:
    """Body of the forked child: never returns."""
    code = 0
    try:
        os.setpgid(0, 0)  # own group: a timeout kills everything this job started
        signal.set_wakeup_fd(-1)  # the parent's loop owns that fd
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, _time_is_up)
        # commands a job starts can tell which minion and job they run for
        os.environ["SALINE_MINION_ID"] = ctx.minion_id
        os.environ["SALINE_JID"] = job.jid
        payload = _pack_result(call_function(ctx, job))
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:
        code = 70
    finally:
        os._exit(code)


async def _read_all(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    chunks: list[bytes] = []
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
            return
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(b"".join(chunks))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


async def _exited(pidfd: int) -> None:
    """Until the child has exited (its pidfd becomes readable), without blocking the loop.
    It stays a zombie until reaped, so its pid (and group id) cannot be reused meanwhile."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)


async def _stop(pid: int, pidfd: int) -> None:
    """Time is up: SIGTERM (the function may clean up), then SIGKILL of its whole group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_exited(pidfd), KILL_GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # what the job started and left in its group
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def execute(
    ctx: Context,
    job: Job,
    minion_id: str,
    timeout: float | None = None,
    relay: Relay | None = None,
) -> Return:
    """Fork, run ``job`` in the child, and return its Return (failure on crash or timeout).

    The child runs for at most :func:`function_timeout` seconds (and at most ``timeout``,
    when given). With ``relay``, the child gets a channel for files and pillar through
    this process (to the master, or local roots), served until the child exits.
    """
    limit = function_timeout(ctx, job)
    if timeout is not None:
        limit = min(limit, timeout)
    started = time.monotonic()
    read_fd, write_fd = os.pipe()
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        parent_sock.close()
        _child(replace(ctx, channel=PipeChannel(child_sock)), job, write_fd)
    os.close(write_fd)
    child_sock.close()
    server = asyncio.create_task(serve_child(parent_sock, relay)) if relay else None
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # set from both sides: no window where a timeout misses the group
    pidfd = os.pidfd_open(pid)
    timed_out = False
    try:
        try:
            payload = await asyncio.wait_for(_read_all(read_fd), limit)
        except TimeoutError:
            timed_out = True
            payload = b""
            await _stop(pid, pidfd)
        await _exited(pidfd)
        _, status = os.waitpid(pid, 0)
        exit_code = os.waitstatus_to_exitcode(status)
    finally:
        os.close(pidfd)
        os.close(read_fd)
        if server is not None:
            server.cancel()
        parent_sock.close()
    result: tuple[bool, int, Any]
    if timed_out:
        result = (
            False,
            TIMEOUT_RETCODE,
            _error("timeout", f"{job.fun} did not finish in {limit:g}s; killed"),
        )
    elif payload:
        success, retcode, value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        result = (bool(success), int(retcode), value)
    else:
        result = (False, 1, _error("crashed", f"{job.fun}: child exited with {exit_code}"))
    success, retcode, value = result
    return Return(
        jid=job.jid,
        id=minion_id,
        fun=job.fun,
        success=success,
        retcode=retcode,
        ret=value,
        duration_ms=(time.monotonic() - started) * 1000,
    )
