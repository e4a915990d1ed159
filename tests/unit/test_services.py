"""Service providers: the supervisor on real processes, systemd against a fake systemctl."""

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minion.config import MinionConfig, ServiceSpec
from minion.services import select
from minion.services.supervisor import SupervisorProvider
from minion.services.systemd import SystemdProvider
from saline.errors import ExecutionError
from tests.support import poll, process_gone


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


PY = sys.executable
SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen(["sleep", "300"])
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(300)
    """
)
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " open(sys.argv[1], 'w').close(); time.sleep(300)"
)
ECHO_ENV = "import os, time; print(os.environ['SVC_VAR'], os.getcwd(), flush=True); time.sleep(300)"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "services"


@pytest.fixture
def services(tmp_path: Path) -> dict[str, ServiceSpec]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return {
        "sleeper": ServiceSpec(argv=["sleep", "300"], stop_timeout=5),
        "spawner": ServiceSpec(argv=[PY, "-c", SPAWNER, str(tmp_path / "child.pid")]),
        "stubborn": ServiceSpec(
            argv=[PY, "-c", STUBBORN, str(tmp_path / "stubborn.ready")], stop_timeout=0.5
        ),
        "envy": ServiceSpec(argv=[PY, "-c", ECHO_ENV], cwd=workdir, env={"SVC_VAR": "v42"}),
        "broken": ServiceSpec(argv=["/nonexistent/daemon"]),
    }


@pytest.fixture
def provider(services: dict[str, ServiceSpec], state_dir: Path) -> Iterator[SupervisorProvider]:
    prov = SupervisorProvider(services, state_dir)
    yield prov
    for name in services:
        prov.stop(name)


def test_start_status_stop(provider: SupervisorProvider, state_dir: Path) -> None:
    assert provider.status("sleeper").running is False
    started = provider.start("sleeper")
    assert started.running is True
    assert started.pid is not None
    pid = started.pid
    # the pid and its start time: the pair names this process even after pid reuse
    assert (state_dir / "sleeper.pid").read_text().split()[0] == str(pid)
    assert len((state_dir / "sleeper.pid").read_text().split()) == 2
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    assert os.getpgid(pid) == pid  # own session and group, detached from ours
    status = provider.status("sleeper")
    assert (status.running, status.pid) == (True, pid)

    stopped = provider.stop("sleeper")
    assert stopped.running is False
    assert stopped.pid is None
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped: not even a zombie
    assert not (state_dir / "sleeper.pid").exists()
    assert provider.status("sleeper").running is False


def test_start_is_idempotent(provider: SupervisorProvider) -> None:
    first = provider.start("sleeper")
    second = provider.start("sleeper")
    assert second.running is True
    assert second.pid == first.pid


def test_stop_is_idempotent(provider: SupervisorProvider) -> None:
    assert provider.stop("sleeper").running is False
    provider.start("sleeper")
    provider.stop("sleeper")
    assert provider.stop("sleeper").running is False


def test_restart_changes_pid(provider: SupervisorProvider) -> None:
    old = provider.start("sleeper").pid
    assert old is not None
    new = provider.restart("sleeper")
    assert new.running is True
    assert new.pid is not None
    assert new.pid != old
    assert process_gone(old)


def test_unknown_service_lists_known_names(provider: SupervisorProvider) -> None:
    for action in (provider.status, provider.start, provider.stop):
        with pytest.raises(ExecutionError, match=r"unknown service 'ghost'.*broken.*sleeper"):
            action("ghost")


def test_pidfile_with_dead_pid_is_not_running(
    provider: SupervisorProvider, state_dir: Path
) -> None:
    state_dir.mkdir()
    (state_dir / "sleeper.pid").write_text(f"{dead_pid()}\n")
    status = provider.status("sleeper")
    assert status.running is False
    assert "exited" in status.detail
    started = provider.start("sleeper")  # a stale pidfile does not block a start
    assert started.running is True


def test_garbage_pidfile_is_not_running(provider: SupervisorProvider, state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "sleeper.pid").write_text("not a pid")
    assert provider.status("sleeper").running is False


def test_reused_pid_is_not_ours(provider: SupervisorProvider, state_dir: Path) -> None:
    """A pidfile naming a live process that runs another program: not running, not killed."""
    state_dir.mkdir()
    (state_dir / "sleeper.pid").write_text(str(os.getpid()))
    status = provider.status("sleeper")
    assert status.running is False
    assert "another program" in status.detail
    assert provider.stop("sleeper").running is False  # and we are still alive to check it
    assert not (state_dir / "sleeper.pid").exists()


def test_a_reused_pid_with_another_start_time_is_not_ours(
    provider: SupervisorProvider, state_dir: Path
) -> None:
    """Even a process running the very same program is not ours if it started later."""
    started = provider.start("sleeper")
    assert started.pid is not None
    pidfile = state_dir / "sleeper.pid"
    pid, stamp = pidfile.read_text().split()
    pidfile.write_text(f"{pid} {int(stamp) - 1}\n")  # as if the pid had been reused since
    status = provider.status("sleeper")
    assert status.running is False and "another program" in status.detail
    pidfile.write_text(f"{pid} {stamp}\n")
    assert provider.status("sleeper").running is True


def test_a_service_that_execs_another_program_is_still_running(
    tmp_path: Path, state_dir: Path
) -> None:
    spec = ServiceSpec(argv=["sh", "-c", "exec sleep 300"], stop_timeout=2)
    provider = SupervisorProvider({"wrapped": spec}, state_dir)
    try:
        assert provider.start("wrapped").running is True
        poll(
            lambda: "sleep" in Path(f"/proc/{provider.status('wrapped').pid}/cmdline").read_text(),
            5,
        )
        assert provider.status("wrapped").running is True  # its pid and start time still match
    finally:
        provider.stop("wrapped")


def test_stop_kills_the_whole_process_group(provider: SupervisorProvider, tmp_path: Path) -> None:
    provider.start("spawner")
    child_file = tmp_path / "child.pid"
    assert poll(lambda: child_file.exists() and child_file.read_text() != "")
    child = int(child_file.read_text())
    assert not process_gone(child)
    provider.stop("spawner")
    assert poll(lambda: process_gone(child))


def test_stop_escalates_to_sigkill(provider: SupervisorProvider, tmp_path: Path) -> None:
    pid = provider.start("stubborn").pid
    assert pid is not None
    assert poll((tmp_path / "stubborn.ready").exists)  # SIGTERM is ignored from now on
    started = time.monotonic()
    stopped = provider.stop("stubborn")
    elapsed = time.monotonic() - started
    assert stopped.running is False
    assert process_gone(pid)
    assert 0.5 <= elapsed < 8  # waited stop_timeout, then SIGKILL


def test_service_env_cwd_and_log(
    provider: SupervisorProvider, state_dir: Path, tmp_path: Path
) -> None:
    provider.start("envy")
    log = state_dir / "envy.log"
    assert poll(lambda: log.exists() and log.read_text() != "")
    assert log.read_text() == f"v42 {tmp_path / 'work'}\n"


def test_start_failure_is_an_execution_error(provider: SupervisorProvider) -> None:
    with pytest.raises(ExecutionError, match="cannot start broken: /nonexistent/daemon"):
        provider.start("broken")
    assert provider.status("broken").running is False


def test_service_survives_the_caller_exiting(
    services: dict[str, ServiceSpec], state_dir: Path, provider: SupervisorProvider
) -> None:
    """The minion starts services from a job child that exits at once."""
    specs = {name: spec.model_dump(mode="json") for name, spec in services.items()}
    specs_json = json.dumps(json.dumps(specs))
    code = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        from minion.config import ServiceSpec
        from minion.services.supervisor import SupervisorProvider
        specs = {{k: ServiceSpec(**v) for k, v in json.loads({specs_json}).items()}}
        print(SupervisorProvider(specs, Path({str(state_dir)!r})).start("sleeper").pid)
        """
    )
    caller = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert caller.returncode == 0, caller.stderr
    pid = int(caller.stdout)
    status = provider.status("sleeper")
    assert (status.running, status.pid) == (True, pid)
    provider.stop("sleeper")
    assert poll(lambda: process_gone(pid))


# -- select_provider -----------------------------------------------------------------------


def test_select_provider(
    tmp_path: Path, services: dict[str, ServiceSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"cachedir": tmp_path / "cache", "pki_dir": tmp_path / "pki"}
    chosen = select.select_provider(MinionConfig(service_provider="systemd", **base))
    assert isinstance(chosen, SystemdProvider)
    sup = select.select_provider(MinionConfig(service_provider="supervisor", **base))
    assert isinstance(sup, SupervisorProvider)
    assert sup._state_dir == tmp_path / "cache" / "services"

    monkeypatch.setattr(select, "SYSTEMD_RUNTIME_DIR", tmp_path)  # systemd "booted"
    assert isinstance(select.select_provider(MinionConfig(**base)), SystemdProvider)
    with_services = MinionConfig(services=services, **base)
    assert isinstance(select.select_provider(with_services), SupervisorProvider)
    monkeypatch.setattr(select, "SYSTEMD_RUNTIME_DIR", tmp_path / "absent")
    assert isinstance(select.select_provider(MinionConfig(**base)), SupervisorProvider)


# -- systemd against a fake systemctl ------------------------------------------------------

FAKE_SYSTEMCTL = """\
#!{python}
import json, sys, time
state_file, log_file = {state!r}, {log!r}
args = sys.argv[1:]
with open(log_file, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
state = json.load(open(state_file))
unit = args[-1]
if args[0] == "show":
    info = state.get(unit)
    if info is None:
        print("LoadState=not-found\\nActiveState=inactive\\nSubState=dead\\nMainPID=0")
        print("UnitFileState=")
        sys.exit(0)
    if info.get("hang"):
        time.sleep(60)
    active = info["active"]
    print("LoadState=loaded")
    print("ActiveState=" + ("active" if active else "inactive"))
    print("SubState=" + ("running" if active else "dead"))
    print("MainPID=" + (str(info["pid"]) if active else "0"))
    print("UnitFileState=" + info["enabled"])
    sys.exit(0)
info = state[unit]
if info.get("fail"):
    print("Job for " + unit + " failed.", file=sys.stderr)
    sys.exit(1)
info["active"] = args[0] in ("start", "restart")
info["pid"] += 1
json.dump(state, open(state_file, "w"))
"""


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> tuple[Path, Path, Path]:
    state = tmp_path / "units.json"
    state.write_text(
        json.dumps(
            {
                "nginx.service": {"active": False, "pid": 100, "enabled": "enabled"},
                "broken": {"active": False, "pid": 1, "enabled": "disabled", "fail": True},
                "hung": {"active": True, "pid": 5, "enabled": "static", "hang": True},
            }
        )
    )
    log = tmp_path / "calls.log"
    script = tmp_path / "systemctl"
    script.write_text(FAKE_SYSTEMCTL.format(python=PY, state=str(state), log=str(log)))
    script.chmod(0o755)
    return script, state, log


def test_systemd_status_start_stop_restart(fake_systemctl: tuple[Path, Path, Path]) -> None:
    script, _, log = fake_systemctl
    prov = SystemdProvider(systemctl=str(script))
    status = prov.status("nginx.service")
    assert (status.running, status.pid, status.enabled) == (False, None, True)
    assert status.detail == "inactive (dead)"
    started = prov.start("nginx.service")
    assert (started.running, started.pid, started.detail) == (True, 101, "active (running)")
    restarted = prov.restart("nginx.service")
    assert (restarted.running, restarted.pid) == (True, 102)
    assert prov.stop("nginx.service").running is False
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    actions = [call for call in calls if call[0] != "show"]
    assert actions == [
        ["start", "--", "nginx.service"],
        ["restart", "--", "nginx.service"],
        ["stop", "--", "nginx.service"],
    ]
    assert all(call[-2] == "--" for call in calls)  # a unit name can never be an option


def test_systemd_unknown_unit(fake_systemctl: tuple[Path, Path, Path]) -> None:
    prov = SystemdProvider(systemctl=str(fake_systemctl[0]))
    with pytest.raises(ExecutionError, match="unknown unit: ghost"):
        prov.status("ghost")
    with pytest.raises(ExecutionError, match="unknown unit: ghost"):
        prov.start("ghost")


def test_systemd_failed_action(fake_systemctl: tuple[Path, Path, Path]) -> None:
    prov = SystemdProvider(systemctl=str(fake_systemctl[0]))
    assert prov.status("broken").enabled is False
    with pytest.raises(ExecutionError, match=r"systemctl start broken failed \(1\): Job for"):
        prov.start("broken")


def test_systemd_timeout_and_missing_binary(
    fake_systemctl: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    prov = SystemdProvider(systemctl=str(fake_systemctl[0]), query_timeout=0.5)
    with pytest.raises(ExecutionError, match=r"timed out after 0.5s"):
        prov.status("hung")
    missing = SystemdProvider(systemctl=str(tmp_path / "no-systemctl"))
    with pytest.raises(ExecutionError, match="systemctl not found"):
        missing.status("nginx")
    with pytest.raises(ExecutionError, match="invalid unit name"):
        prov.status("")


def test_reload_sends_sighup_and_keeps_the_process(tmp_path: Path, state_dir: Path) -> None:
    ready, hup = tmp_path / "ready", tmp_path / "hup"
    code = textwrap.dedent(
        f"""
        import pathlib, signal, time
        signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(hup)!r}).write_text("hup"))
        pathlib.Path({str(ready)!r}).write_text("ready")
        while True:
            time.sleep(0.05)
        """
    )
    provider = SupervisorProvider(
        {"hupper": ServiceSpec(argv=[sys.executable, "-c", code])}, state_dir
    )
    try:
        started = provider.reload("hupper")  # stopped: reload starts it
        assert started.running and started.pid is not None
        assert poll(ready.exists), "the service installed its SIGHUP handler"
        reloaded = provider.reload("hupper")
        assert poll(hup.exists), "the service got SIGHUP"
        assert reloaded.pid == started.pid == provider.status("hupper").pid, "same process"
    finally:
        provider.stop("hupper")


def test_supervisor_does_not_manage_boot(provider: SupervisorProvider) -> None:
    with pytest.raises(ExecutionError, match="boot"):
        provider.enable("sleeper")
    with pytest.raises(ExecutionError, match="boot"):
        provider.disable("sleeper")
