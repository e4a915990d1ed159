"""service.* states against the real execution functions and a real SupervisorProvider."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minion import modules
from minion.config import MinionConfig, ServiceSpec
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError, StateError
from states.modules import service
from states.modules.base import StateContext
from tests.support import poll, process_gone


class NoFiles:
    def get(self, url: str) -> bytes:
        raise StateError(f"no file server in this test: {url}")


def minion_call(mctx: Context) -> Callable[..., Any]:
    """ctx.call as the minion provides it: the real execution function, errors translated."""
    functions = modules.registry()

    def call(fun: str, *args: Any, **kwargs: Any) -> Any:
        if fun not in functions:
            raise StateError(f"no execution function {fun!r}")
        try:
            value = functions[fun](mctx, *args, **kwargs)
        except ExecutionError as exc:
            raise StateError(f"{fun}: {exc}") from exc
        return value.value if isinstance(value, Outcome) else value

    return call


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[SupervisorProvider]:
    specs = {"sleeper": ServiceSpec(argv=["sleep", "300"], stop_timeout=2)}
    supervisor = SupervisorProvider(specs, tmp_path / "services")
    yield supervisor
    supervisor.stop("sleeper")


@pytest.fixture
def make_ctx(tmp_path: Path, provider: SupervisorProvider) -> Callable[..., StateContext]:
    config = MinionConfig(id="be1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
    mctx = Context(minion_id="be1", config=config, grains={}, services=provider)
    mctx.functions = modules.registry()

    def make(test: bool = False) -> StateContext:
        return StateContext(
            minion_id="be1",
            grains={},
            pillar={},
            test=test,
            call=minion_call(mctx),
            files=NoFiles(),
        )

    return make


def test_running_starts_then_noop(
    make_ctx: Callable[..., StateContext], provider: SupervisorProvider
) -> None:
    result = service.running(make_ctx(), "sleeper")
    assert result.result is True, result.comment
    status = provider.status("sleeper")
    assert status.running and status.pid is not None
    assert result.changes == {"running": True, "pid": status.pid}
    assert "started" in result.comment
    again = service.running(make_ctx(), "sleeper")
    assert again.result is True and again.changes == {}
    assert again.comment == f"service sleeper is already running (pid {status.pid})"
    assert provider.status("sleeper").pid == status.pid


def test_running_test_mode_does_not_start(
    make_ctx: Callable[..., StateContext], provider: SupervisorProvider
) -> None:
    result = service.running(make_ctx(test=True), "sleeper")
    assert result.result is None
    assert result.changes == {"running": True}
    assert result.comment == "would start service sleeper"
    assert not provider.status("sleeper").running


def test_dead_stops_then_noop(
    make_ctx: Callable[..., StateContext], provider: SupervisorProvider
) -> None:
    pid = provider.start("sleeper").pid
    assert pid is not None
    would = service.dead(make_ctx(test=True), "sleeper")
    assert would.result is None and would.comment == "would stop service sleeper"
    assert provider.status("sleeper").pid == pid
    result = service.dead(make_ctx(), "sleeper")
    assert result.result is True and result.changes == {"running": False}
    assert "stopped" in result.comment
    assert poll(lambda: process_gone(pid))
    again = service.dead(make_ctx(), "sleeper")
    assert again.result is True and again.changes == {}
    assert "already stopped" in again.comment


def test_mod_watch_restarts_running_service(
    make_ctx: Callable[..., StateContext], provider: SupervisorProvider
) -> None:
    old = provider.start("sleeper").pid
    assert old is not None
    would = service.mod_watch(make_ctx(test=True), "sleeper")
    assert would.result is None and "would restart" in would.comment
    assert provider.status("sleeper").pid == old
    result = service.mod_watch(make_ctx(), "sleeper")
    assert result.result is True, result.comment
    new = provider.status("sleeper").pid
    assert new is not None and new != old
    assert result.changes == {"restarted": True, "old_pid": old, "pid": new}
    assert poll(lambda: process_gone(old))


def test_mod_watch_starts_stopped_service_and_respects_dead(
    make_ctx: Callable[..., StateContext], provider: SupervisorProvider
) -> None:
    result = service.mod_watch(make_ctx(), "sleeper")
    assert result.result is True and result.changes["running"] is True
    assert provider.status("sleeper").running
    stopped = service.mod_watch(make_ctx(), "sleeper", sfun="dead")
    assert stopped.result is True and stopped.changes == {"running": False}
    assert not provider.status("sleeper").running


def test_unknown_service_fails_with_provider_message(
    make_ctx: Callable[..., StateContext],
) -> None:
    result = service.running(make_ctx(), "nosuch")
    assert result.result is False
    assert "unknown service 'nosuch'" in result.comment


def test_enable_unreported_by_provider_is_said_not_faked(
    make_ctx: Callable[..., StateContext], provider: SupervisorProvider
) -> None:
    provider.start("sleeper")
    result = service.running(make_ctx(), "sleeper", enable=True)
    assert result.result is True and result.changes == {}
    assert "enable not managed" in result.comment
