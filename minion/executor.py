"""Run one execution function in a forked child, under a timeout, and build its Return.

Forking keeps the minion alive and responsive whatever the function does: a function that
raises, hangs, or leaks is confined to its child; on timeout the child's whole process
group is killed. The result comes back as msgpack over a pipe.
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
from minion.modules.base import Context, Outcome
from saline.errors import ExecutionError
from saline.protocol import Job, Return


def _error(kind: str, message: str) -> dict[str, str]:
    return {"error": kind, "message": message}


def call_function(ctx: Context, job: Job) -> tuple[bool, int, Any]:
    """Run the function in this process: (success, retcode, return). Never raises."""
    fn: Callable[..., Any] | None = ctx.functions.get(job.fun)
    if fn is None:
        return False, 254, _error("unknown_function", f"no function {job.fun!r} on this minion")
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


def _child(ctx: Context, job: Job, write_fd: int) -> None:
    """Body of the forked child: never returns."""
    code = 0
    try:
        os.setpgid(0, 0)  # own group: a timeout kills everything this job started
        signal.set_wakeup_fd(-1)  # the parent's loop owns that fd
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
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


async def _reap(pid: int) -> int:
    """Wait for the child without blocking the loop (pidfd becomes readable on exit)."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


async def execute(
    ctx: Context, job: Job, minion_id: str, timeout: float, relay: Relay | None = None
) -> Return:
    """Fork, run ``job`` in the child, and return its Return (failure on crash or timeout).

    With ``relay``, the child gets a channel to the master (files, pillar) through this
    process, served until the child exits.
    """
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
    timed_out = False
    try:
        try:
            payload = await asyncio.wait_for(_read_all(read_fd), timeout)
        except TimeoutError:
            timed_out = True
            payload = b""
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        exit_code = await _reap(pid)
    finally:
        os.close(read_fd)
        if server is not None:
            server.cancel()
        parent_sock.close()
    result: tuple[bool, int, Any]
    if timed_out:
        result = (
            False,
            124,
            _error("timeout", f"{job.fun} did not finish in {timeout:g}s; killed"),
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
