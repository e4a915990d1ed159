"""Long jobs: a function's time limit is its own (``timeout=``, its module's declared
default, the minion's cap), never a client's patience; the master's deadline follows it;
a timed-out function is stopped cleanly; ``--batch-wait`` rests a batch's slots."""

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from master.bus import EventBus
from master.client_models import RunRequest
from master.inventory import Inventory
from master.jobs import DEADLINE_MARGIN, ActiveJob, JobManager, JobRequest
from master.presence import Presence
from master.store.base import ReturnRecord
from master.store.sqlite import SqliteStore
from minion import executor
from minion.config import MinionConfig
from minion.executor import execute, function_timeout
from minion.modules import REGISTRY, cmd, declared_timeout, declared_timeouts
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from saline.codec import decode_from_master, decode_from_minion
from saline.keys import KeyRing, KeyState, generate_keypair
from saline.protocol import (
    DEFAULT_FUNCTION_TIMEOUT,
    DEFAULT_MAX_FUNCTION_TIMEOUT,
    Hello,
    Job,
    Return,
    killed_at_time_limit,
    timeout_keyword,
)
from tests.support import poll, process_gone


def _sleep(ctx: Context, seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _quick(ctx: Context) -> None:
    time.sleep(600)


def _takes_timeout(ctx: Context, timeout: float = 1) -> float:
    return timeout


def _stubborn(ctx: Context) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)


#: this module declares _quick's default, as an execution module would
TIMEOUTS = {_quick: 0.5}


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    functions: dict[str, Callable[..., Any]] = {
        "t.sleep": _sleep,
        "t.quick": _quick,
        "t.takes_timeout": _takes_timeout,
        "t.stubborn": _stubborn,
        "cmd.run": cmd.run,
        "chef_server.reconfigure": REGISTRY["chef_server.reconfigure"],
    }
    config = MinionConfig(cachedir=tmp_path / "cache", max_function_timeout=120)
    return Context("m1", config, {}, SupervisorProvider({}, tmp_path / "sv"), functions)


def _job(
    fun: str,
    *args: Any,
    timeout: float = 60,
    default: bool = False,
    kwargs: dict[str, Any] | None = None,
) -> Job:
    return Job(
        jid="1",
        fun=fun,
        args=list(args),
        kwargs=kwargs or {},
        timeout=timeout,
        default_timeout=default,
    )


# -- the declarations ---------------------------------------------------------------------


def test_reconfigure_class_functions_declare_long_defaults() -> None:
    limits = {name: declared_timeout(REGISTRY[name]) for name in REGISTRY}
    assert limits["chef_server.reconfigure"] == 1800
    assert limits["chef_server.upgrade"] == 3600
    assert limits["chef_backend.reconfigure"] == 1800
    assert limits["chef_backend.join_cluster"] == 1800
    assert limits["chef_backend.create_cluster"] == 1800
    assert limits["chef_backend.pgsql_follow"] == 3600
    assert limits["state.apply"] == 3600
    assert limits["test.ping"] is None and limits["cmd.run"] is None
    # what a hello reports: the declared ones only, capped by max_function_timeout
    reported = declared_timeouts(REGISTRY, cap=2000)
    assert reported["chef_server.reconfigure"] == 1800 and reported["chef_server.upgrade"] == 2000
    assert "test.ping" not in reported
    Hello(id="m1", functions=sorted(REGISTRY), timeouts=reported, max_function_timeout=2000)


def test_the_time_limit_of_a_job(ctx: Context) -> None:
    ctx.config.max_function_timeout = 7200
    # the caller's timeout= wins over a declared default, both ways
    assert function_timeout(ctx, _job("chef_server.reconfigure", timeout=2400)) == 2400
    assert function_timeout(ctx, _job("t.quick", timeout=5)) == 5
    # no timeout asked: the declared default (at most the job's ceiling), else the default
    assert (
        function_timeout(ctx, _job("chef_server.reconfigure", timeout=3600, default=True)) == 1800
    )
    assert function_timeout(ctx, _job("t.quick", timeout=3600, default=True)) == 0.5
    assert (
        function_timeout(ctx, _job("t.sleep", 1, timeout=3600, default=True))
        == DEFAULT_FUNCTION_TIMEOUT
    )
    assert function_timeout(ctx, _job("chef_server.reconfigure", timeout=60, default=True)) == 60
    # the minion's cap, whatever is asked or declared
    ctx.config.max_function_timeout = 100
    assert function_timeout(ctx, _job("chef_server.reconfigure", timeout=2400)) == 100
    assert function_timeout(ctx, _job("chef_server.reconfigure", timeout=3600, default=True)) == 100


def test_the_timeout_keyword() -> None:
    assert timeout_keyword({"timeout": 90}) == 90.0 and timeout_keyword({"timeout": "1.5"}) == 1.5
    assert timeout_keyword({}) is None and timeout_keyword({"timeout": None}) is None
    for bad in ("soon", True, 0, -3, 10**6):
        with pytest.raises(ValueError, match="timeout= must be a number of seconds"):
            timeout_keyword({"timeout": bad})


# -- the executor -------------------------------------------------------------------------


def _run(ctx: Context, job: Job) -> Any:
    return asyncio.run(execute(ctx, job, "m1"))


def test_a_declared_default_is_the_limit_when_the_job_asks_none(ctx: Context) -> None:
    started = time.monotonic()
    ret = _run(ctx, _job("t.quick", timeout=60, default=True))
    assert (ret.success, ret.retcode, ret.ret["error"]) == (False, 124, "timeout")
    assert ret.ret["message"] == "t.quick did not finish in 0.5s; killed"
    assert time.monotonic() - started < 5


def test_the_timeout_keyword_is_the_limit_and_reaches_only_functions_that_take_it(
    ctx: Context,
) -> None:
    # test.sleep-like: no timeout argument, so timeout= is the job's limit, not an argument
    ret = _run(ctx, _job("t.sleep", 0.1, timeout=5, kwargs={"timeout": 5}))
    assert (ret.success, ret.ret) == (True, "slept")
    ret = _run(ctx, _job("t.sleep", 30, timeout=0.5, kwargs={"timeout": 0.5}))
    assert (ret.retcode, ret.ret["error"]) == (124, "timeout")
    # a function with a timeout of its own (cmd.run, chef_*) gets it as well
    ret = _run(ctx, _job("t.takes_timeout", timeout=7, kwargs={"timeout": 7}))
    assert (ret.success, ret.ret) == (True, 7)


def test_a_timed_out_command_in_its_own_session_is_stopped_too(
    ctx: Context, tmp_path: Path
) -> None:
    """cmd.run starts its command in a session of its own, out of the job's process group:
    the SIGTERM before the kill lets cmd.run kill it (before, it outlived the job)."""
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; exec sleep 600"
    ret = _run(ctx, _job("cmd.run", script, timeout=1, kwargs={"shell": True}))
    assert (ret.retcode, ret.ret["error"]) == (124, "timeout")
    command = int(pidfile.read_text())
    assert poll(lambda: process_gone(command), timeout=5), "the command outlived its job"


def test_a_function_ignoring_sigterm_is_killed_after_the_grace(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "KILL_GRACE", 0.5)
    started = time.monotonic()
    ret = _run(ctx, _job("t.stubborn", timeout=0.5))
    assert (ret.retcode, ret.ret["error"]) == (124, "timeout")
    assert 1.0 <= time.monotonic() - started < 5


# -- the master ---------------------------------------------------------------------------


class Sent:
    """The sender of a JobManager: records (minion, decoded job, when)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, Job, float]] = []

    def __call__(self, minion_id: str, frame: bytes) -> bool:
        msg = decode_from_master(frame, 1 << 20)
        assert isinstance(msg, Job)
        self.frames.append((minion_id, msg, time.monotonic()))
        return True


@pytest.fixture
def manager(tmp_path: Path) -> tuple[JobManager, Sent]:
    keys = KeyRing(tmp_path / "pki")
    presence = Presence(30.0)
    for minion_id in ("a", "b", "c"):
        keys.add(minion_id, generate_keypair().public, KeyState.ACCEPTED)
        presence.start(minion_id, minion_id.encode())
    store = SqliteStore(tmp_path / "jobs.db")
    sent = Sent()
    return JobManager(store, EventBus(store), Inventory(keys, presence, store), sent), sent


def _request(fun: str, timeout: float | None, **kw: Any) -> JobRequest:
    return JobRequest("*", "glob", fun, [], {}, timeout, kw.pop("batch", None), "u", **kw)


def _deadline_after_send(job: ActiveJob, minion_id: str) -> float:
    return job.inflight[minion_id] - time.monotonic()


def test_the_deadline_is_the_function_limit_not_the_wait(manager: tuple[JobManager, Sent]) -> None:
    jobs, sent = manager
    jobs.declare_limits("a", {"chef_server.reconfigure": 1800.0}, 2000.0)
    jobs.declare_limits("b", {}, 600.0)
    # "c" said nothing of its limits: the default max_function_timeout is assumed
    job = jobs.start(_request("chef_server.reconfigure", None))
    jobs.dispatch(job)
    assert job.record.timeout == DEFAULT_MAX_FUNCTION_TIMEOUT  # the longest of them
    [(_, frame, _), *_] = sent.frames
    assert frame.default_timeout is True and frame.timeout == DEFAULT_MAX_FUNCTION_TIMEOUT
    margin = pytest.approx(DEADLINE_MARGIN, abs=1)
    assert _deadline_after_send(job, "a") - 1800 == margin
    assert _deadline_after_send(job, "b") - DEFAULT_FUNCTION_TIMEOUT == margin
    assert _deadline_after_send(job, "c") - DEFAULT_MAX_FUNCTION_TIMEOUT == margin
    # an asked limit is the limit everywhere, capped by what a minion said its cap is
    sent.frames.clear()
    job = jobs.start(_request("test.sleep", 900.0))
    jobs.dispatch(job)
    assert {f.default_timeout for _, f, _ in sent.frames} == {False}
    assert {f.timeout for _, f, _ in sent.frames} == {900.0}
    assert _deadline_after_send(job, "a") - 900 == margin
    assert _deadline_after_send(job, "b") - 600 == margin
    # a later hello with nothing to say forgets what was known
    jobs.declare_limits("a", {}, None)
    assert jobs.function_limit("a", "chef_server.reconfigure", None) == DEFAULT_MAX_FUNCTION_TIMEOUT


def _return(jid: str, minion_id: str, success: bool, retcode: int, ret: Any) -> ReturnRecord:
    return ReturnRecord(jid, minion_id, "test.sleep", success, retcode, ret, 1.0, time.time())


def test_a_return_killed_at_its_limit_is_timed_out_and_waiting_clients_see_who_runs(
    manager: tuple[JobManager, Sent],
) -> None:
    jobs, _ = manager
    job = jobs.start(_request("test.sleep", 5.0))
    jobs.dispatch(job)
    killed = {"error": "timeout", "message": "test.sleep did not finish in 5s; killed"}
    jobs.returned(_return(job.record.jid, "a", False, 124, killed))
    jobs.returned(_return(job.record.jid, "b", False, 124, {"stdout": "", "retcode": 124}))
    partial = job.summary(stopped_waiting=True)
    assert partial.timed_out == ["a", "c"] and partial.running == ["c"]
    assert partial.failed == ["b"]  # a command exiting 124 is a failure, not a timeout
    assert job.summary().running == [] and job.summary().timed_out == ["a"]


def test_a_minion_lost_while_running_a_job_is_not_waited_for(
    manager: tuple[JobManager, Sent],
) -> None:
    """Deadlines are long now: a minion gone offline mid-job ends as timed out at once."""
    jobs, _ = manager

    async def scenario() -> tuple[list[str], float]:
        job = jobs.start(_request("test.sleep", 600.0))
        jobs.dispatch(job)
        started = time.monotonic()
        supervisor = asyncio.create_task(jobs.supervise(job))
        jobs.inventory.presence.drop("c")
        for minion_id in ("a", "b"):
            jobs.returned(_return(job.record.jid, minion_id, True, 0, True))
        done = await asyncio.wait_for(supervisor, 5)
        return done.timed_out, time.monotonic() - started

    timed_out, took = asyncio.run(scenario())
    assert timed_out == ["c"] and took < 2


def test_batch_wait_rests_each_slot_after_a_return(manager: tuple[JobManager, Sent]) -> None:
    jobs, sent = manager

    async def scenario(batch_wait: float) -> list[float]:
        sent.frames.clear()
        job = jobs.start(_request("test.ping", 5.0, batch=1, batch_wait=batch_wait))
        supervisor = asyncio.create_task(jobs.supervise(job))
        returned_at: list[float] = []
        for _ in range(3):
            while len(sent.frames) <= len(returned_at):
                await asyncio.sleep(0.01)
            minion_id = sent.frames[-1][0]
            returned_at.append(time.monotonic())
            jobs.returned(_return(job.record.jid, minion_id, True, 0, True))
        await asyncio.wait_for(supervisor, 10)
        return [sent.frames[i + 1][2] - returned_at[i] for i in range(2)]

    assert all(0.4 <= gap < 1.5 for gap in asyncio.run(scenario(0.4)))
    assert all(gap < 0.3 for gap in asyncio.run(scenario(0.0)))


def test_a_run_request_takes_a_batch_wait() -> None:
    request = RunRequest(op="run", target="*", fun="test.ping", batch=2, batch_wait=1.5)
    assert request.batch_wait == 1.5
    with pytest.raises(ValueError, match="batch_wait"):
        RunRequest(op="run", target="*", fun="test.ping", batch_wait=-1)


def test_old_job_frames_still_mean_what_they_said() -> None:
    """A job frame without default_timeout (as sent before it existed) is an explicit limit."""
    raw = {"v": 1, "kind": "job", "jid": "1", "fun": "test.ping", "timeout": 10.0}
    job = decode_from_master(msgpack.packb(raw), 1 << 20)
    assert isinstance(job, Job) and (job.timeout, job.default_timeout) == (10.0, False)


def test_a_spooled_return_of_before_still_decodes() -> None:
    raw = {
        "v": 1,
        "kind": "return",
        "jid": "20240101000000000001",
        "id": "be1",
        "fun": "test.sleep",
        "success": False,
        "retcode": 124,
        "ret": {"error": "timeout", "message": "test.sleep did not finish in 10s; killed"},
        "duration_ms": 10000.0,
    }
    ret = decode_from_minion(msgpack.packb(raw), 1 << 20)
    assert isinstance(ret, Return) and killed_at_time_limit(ret.retcode, ret.ret)
