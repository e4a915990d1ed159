"""cmd.* states running real commands through the real ``cmd.run`` execution function."""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minion import modules
from minion.config import MinionConfig
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError, StateError
from states.modules import cmd
from states.modules.base import StateContext


class NoFiles:
    def get(self, url: str) -> bytes:
        raise StateError(f"no file server in this test: {url}")


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., StateContext]:
    config = MinionConfig(id="be1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
    provider = SupervisorProvider({}, tmp_path / "services")
    mctx = Context(minion_id="be1", config=config, grains={}, services=provider)
    functions = modules.registry()
    calls: list[str] = []

    def call(fun: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(fun)
        try:
            value = functions[fun](mctx, *args, **kwargs)
        except ExecutionError as exc:
            raise StateError(f"{fun}: {exc}") from exc
        return value.value if isinstance(value, Outcome) else value

    def make(test: bool = False, secrets: frozenset[str] = frozenset()) -> StateContext:
        return StateContext(
            minion_id="be1",
            grains={},
            pillar={},
            test=test,
            call=call,
            files=NoFiles(),
            secrets=secrets,
        )

    return make


def test_run_succeeds_with_output(make_ctx: Callable[..., StateContext], tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = cmd.run(make_ctx(), f"touch {marker}")
    assert result.result is True
    assert result.changes == {"retcode": 0, "stdout": "", "stderr": ""}
    assert marker.exists()
    echo = cmd.run(make_ctx(), "echo hello")
    assert echo.changes["stdout"] == "hello\n" and echo.comment == "ran echo hello"


def test_run_failure_reports_retcode_and_stderr(make_ctx: Callable[..., StateContext]) -> None:
    result = cmd.run(make_ctx(), "ls /definitely/not/here")
    assert result.result is False
    assert result.changes["retcode"] == 2
    assert "/definitely/not/here" in result.changes["stderr"]
    assert "retcode 2" in result.comment
    missing = cmd.run(make_ctx(), "no-such-binary-xyz")
    assert missing.result is False and "command not found" in missing.comment


def test_creates_skips_when_path_exists(
    make_ctx: Callable[..., StateContext], tmp_path: Path
) -> None:
    made = tmp_path / "made"
    first = cmd.run(make_ctx(), f"touch {made}", creates=str(made))
    assert first.result is True and first.changes["retcode"] == 0
    made.write_text("content the second run must not touch")
    second = cmd.run(make_ctx(), f"rm {made}", creates=str(made))
    assert second.result is True and second.changes == {}
    assert second.comment == f"skipped: {made} already exists"
    assert made.exists()


def test_unless_and_onlyif(make_ctx: Callable[..., StateContext], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    flag = tmp_path / "flag"
    skipped = cmd.run(make_ctx(), f"touch {marker}", unless="true")
    assert skipped.result is True and "unless condition is true" in skipped.comment
    assert not marker.exists()
    # unless with several checks: one failing check is enough to run
    ran = cmd.run(make_ctx(), f"touch {marker}", unless=["true", f"test -f {flag}"])
    assert ran.result is True and ran.changes["retcode"] == 0 and marker.exists()
    marker.unlink()
    not_needed = cmd.run(make_ctx(), f"touch {marker}", onlyif=["true", f"test -f {flag}"])
    assert not_needed.result is True and not_needed.changes == {}
    assert f"onlyif condition is false (test -f {flag} failed)" in not_needed.comment
    assert not marker.exists()
    flag.write_text("")
    needed = cmd.run(make_ctx(), f"touch {marker}", onlyif=f"test -f {flag}")
    assert needed.result is True and marker.exists()
    broken = cmd.run(make_ctx(), f"touch {marker}2", onlyif="no-such-binary-xyz")
    assert broken.result is True and "onlyif condition is false" in broken.comment


def test_test_mode_runs_nothing(make_ctx: Callable[..., StateContext], tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = cmd.run(make_ctx(test=True), f"touch {marker}", unless=f"test -f {marker}")
    assert result.result is None
    assert result.changes == {"command": f"touch {marker}"}
    assert result.comment == f"would run touch {marker}"
    assert not marker.exists()
    marker.write_text("")
    skip = cmd.run(make_ctx(test=True), f"rm {marker}", creates=str(marker))
    assert skip.result is True and "skipped" in skip.comment and marker.exists()


def test_shell_cwd_env_and_timeout(make_ctx: Callable[..., StateContext], tmp_path: Path) -> None:
    result = cmd.run(
        make_ctx(),
        'echo "$GREETING" from $(pwd)',
        shell=True,
        cwd=str(tmp_path),
        env={"GREETING": "hi"},
    )
    assert result.changes["stdout"] == f"hi from {tmp_path}\n"
    timed_out = cmd.run(make_ctx(), "sleep 30", timeout=0.3)
    assert timed_out.result is False and "timed out" in timed_out.comment


def test_output_truncated_and_secrets_redacted(make_ctx: Callable[..., StateContext]) -> None:
    result = cmd.run(make_ctx(), f"{sys.executable} -c \"print('x' * 25000 + 'END')\"")
    stdout = result.changes["stdout"]
    assert len(stdout) < cmd.OUTPUT_LIMIT + 100
    assert stdout.startswith("[... ") and stdout.endswith("END\n")
    ctx = make_ctx(secrets=frozenset({"s3cr3t"}))
    shown = cmd.run(ctx, "echo s3cr3t")
    assert "s3cr3t" not in repr(shown.model_dump())
    assert shown.changes["stdout"] == "***\n"
    would = cmd.run(make_ctx(test=True, secrets=frozenset({"s3cr3t"})), "echo s3cr3t")
    assert would.result is None and "s3cr3t" not in repr(would.model_dump())


def test_wait_runs_only_on_watch(make_ctx: Callable[..., StateContext], tmp_path: Path) -> None:
    marker = tmp_path / "reconfigured"
    waiting = cmd.wait(make_ctx(), f"touch {marker}")
    assert waiting.result is True and waiting.changes == {}
    assert "waiting" in waiting.comment and not marker.exists()
    would = cmd.mod_watch(make_ctx(test=True), f"touch {marker}", sfun="wait")
    assert would.result is None and not marker.exists()
    fired = cmd.mod_watch(make_ctx(), f"touch {marker}", sfun="wait", cwd=str(tmp_path))
    assert fired.result is True and fired.changes["retcode"] == 0 and marker.exists()
    guarded = cmd.mod_watch(make_ctx(), f"rm {marker}", sfun="wait", creates=str(marker))
    assert guarded.result is True and guarded.changes == {} and marker.exists()
