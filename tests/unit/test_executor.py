"""The forked executor: whatever a function does, the minion gets a structured Return."""

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from minion.config import MinionConfig
from minion.executor import execute
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from saline.protocol import Job
from tests.support import poll, process_gone


def _raise(ctx: Context) -> None:
    raise RuntimeError("boom")


def _expected(ctx: Context) -> None:
    raise ExecutionError("no such thing")


def _hang(ctx: Context, pidfile: str) -> None:
    child = os.fork()
    if child == 0:  # a grandchild that would outlive a careless timeout
        time.sleep(600)
        os._exit(0)
    Path(pidfile).write_text(str(child))
    time.sleep(600)


def _crash(ctx: Context) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _outcome(ctx: Context) -> Outcome:
    return Outcome({"stdout": "x"}, 2)


def _unpackable(ctx: Context) -> Any:
    return {"when": object(), "ids": {1, 2}}


def _whoami(ctx: Context) -> str:
    return f"{os.environ['SALINE_MINION_ID']}/{os.environ['SALINE_JID']}"


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    functions = {
        "t.raise": _raise,
        "t.expected": _expected,
        "t.hang": _hang,
        "t.crash": _crash,
        "t.outcome": _outcome,
        "t.unpackable": _unpackable,
        "t.whoami": _whoami,
    }
    return Context("m1", MinionConfig(), {}, SupervisorProvider({}, tmp_path / "sv"), functions)


def _run(ctx: Context, fun: str, *args: Any, timeout: float = 10) -> Any:
    return asyncio.run(execute(ctx, Job(jid="1", fun=fun, args=list(args)), "m1", timeout))


def test_unexpected_exception_is_a_structured_failure(ctx: Context) -> None:
    ret = _run(ctx, "t.raise")
    assert (ret.success, ret.retcode) == (False, 1)
    assert ret.ret["error"] == "RuntimeError" and "boom" in ret.ret["message"]


def test_expected_error(ctx: Context) -> None:
    ret = _run(ctx, "t.expected")
    assert ret.ret == {"error": "execution_error", "message": "no such thing"}


def test_timeout_kills_the_whole_process_group(ctx: Context, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    ret = _run(ctx, "t.hang", str(pidfile), timeout=1)
    assert (ret.success, ret.retcode, ret.ret["error"]) == (False, 124, "timeout")
    grandchild = int(pidfile.read_text())
    assert poll(lambda: process_gone(grandchild), timeout=5), "the grandchild survived"


def test_crashed_child(ctx: Context) -> None:
    ret = _run(ctx, "t.crash")
    assert ret.success is False and ret.ret["error"] == "crashed"


def test_outcome_retcode(ctx: Context) -> None:
    ret = _run(ctx, "t.outcome")
    assert (ret.success, ret.retcode, ret.ret) == (False, 2, {"stdout": "x"})


def test_unpackable_values_are_converted(ctx: Context) -> None:
    ret = _run(ctx, "t.unpackable")
    assert ret.success is True
    assert sorted(ret.ret["ids"]) == [1, 2] and "object" in ret.ret["when"]


def test_unknown_function(ctx: Context) -> None:
    ret = _run(ctx, "nope.nope")
    assert (ret.success, ret.retcode, ret.ret["error"]) == (False, 254, "unknown_function")


def test_job_environment(ctx: Context) -> None:
    assert _run(ctx, "t.whoami").ret == "m1/1"
