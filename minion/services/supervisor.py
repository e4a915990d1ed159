"""SupervisorProvider: saline's own process supervisor, for hosts (and the lab) without systemd.

Each configured service runs detached in its own session with a pidfile in ``state_dir``.
The process that calls ``start`` may exit right away (the minion runs jobs in a forked
child that exits when done): the service is then re-parented to init, which reaps it.
"""

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from minion.config import ServiceSpec
from minion.services.base import ServiceProvider, ServiceStatus
from saline.errors import ExecutionError

#: polling interval while waiting for a process group to exit
_POLL = 0.05
#: how long a SIGKILLed group may take to disappear before stop() gives up
_KILL_WAIT = 5.0
_DEAD_STATES = frozenset({"Z", "X", "x"})


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat from field 3 (state) on; None if there is no process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: fields resume after the last ")".
    return raw[raw.rfind(b")") + 2 :].split()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) from /proc/PID/stat, or None when the process does not exist."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return fields[0].decode("ascii", errors="replace"), int(fields[2])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22): with
    the pid, it names one process for good, through any ``exec`` it does."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    info = _proc_stat(pid)
    return info is not None and info[0] not in _DEAD_STATES


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process remains in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists but not ours to signal: fall through to the scan
    # kill(0) also succeeds on zombies nobody has reaped yet, so look at each member.
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and info[1] == pgid and info[0] not in _DEAD_STATES:
                return True
    return False


class SupervisorProvider(ServiceProvider):
    """Run the services of the minion config as detached processes tracked by pidfiles."""

    name = "supervisor"

    def __init__(self, services: Mapping[str, ServiceSpec], state_dir: Path) -> None:
        self._services = dict(services)
        self._state_dir = Path(state_dir)
        # Popen objects of services this process started: polled to reap them, and kept
        # alive so the interpreter does not warn that they are "still running".
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- helpers ---------------------------------------------------------------------------

    def _spec(self, service: str) -> ServiceSpec:
        spec = self._services.get(service)
        if spec is None:
            known = ", ".join(sorted(self._services)) or "none configured"
            raise ExecutionError(f"unknown service {service!r}; known services: {known}")
        if "/" in service or service.startswith(".") or "\0" in service:
            raise ExecutionError(f"invalid service name {service!r}")
        return spec

    def _pidfile(self, service: str) -> Path:
        return self._state_dir / f"{service}.pid"

    def _read_pid(self, service: str) -> tuple[int, int | None] | None:
        """(pid, its start time) from the pidfile; the start time is None in a pidfile of
        an older saline, which wrote the pid alone."""
        try:
            text = self._pidfile(service).read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ExecutionError(f"cannot read pidfile of {service}: {exc}") from exc
        try:
            pid, *rest = (int(word) for word in text.split())
        except ValueError:
            return None
        return (pid, rest[0] if rest else None) if pid > 0 else None

    def _write_pid(self, service: str, pid: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._state_dir, prefix=f".{service}.pid.")
        started = _start_time(pid)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{pid}\n" if started is None else f"{pid} {started}\n")
            os.replace(tmp, self._pidfile(service))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _reap(self, pid: int, wait: float = 0.0) -> None:
        """Collect the exit status of ``pid`` if it is our child, so no zombie lingers.

        ``wait`` > 0 blocks up to that long: for a process already seen dead or a zombie.
        """
        proc = self._children.get(pid)
        if proc is not None:
            if wait > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            else:
                proc.poll()
            if proc.returncode is not None:
                del self._children[pid]
            return
        # Not our child -> ChildProcessError: its parent (or init) reaps it.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    @staticmethod
    def _runs_spec(pid: int, spec: ServiceSpec) -> bool:
        """Guard against pid reuse: the process must still run the spec's program."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            return False
        args = [os.path.basename(arg) for arg in raw.split(b"\0")[:2]]
        # argv[1] covers scripts started through their shebang ("python3 /path/to/script").
        return os.path.basename(os.fsencode(spec.argv[0])) in args

    def _wait_gone(self, pid: int, pgid: int | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap(pid)
            if not (_group_alive(pgid) if pgid is not None else _alive(pid)):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(_POLL, remaining))

    @staticmethod
    def _signal(pid: int, pgid: int | None, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if pgid is not None:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    # -- ServiceProvider -------------------------------------------------------------------

    def reload(self, service: str) -> ServiceStatus:
        """SIGHUP to a running service (the usual "re-read your config"); start it if stopped."""
        current = self.status(service)
        if not current.running or current.pid is None:
            return self.start(service)
        self._signal(current.pid, None, signal.SIGHUP)
        return self.status(service)

    def status(self, service: str) -> ServiceStatus:
        spec = self._spec(service)
        recorded = self._read_pid(service)
        if recorded is None:
            return ServiceStatus(service, running=False, detail="stopped")
        pid, started = recorded
        self._reap(pid)
        if not _alive(pid):
            return ServiceStatus(service, running=False, detail=f"dead (pid {pid} exited)")
        # the same pid and start time is the process we started, whatever it exec'd since;
        # without a recorded start time, its command line must still be the spec's
        same = _start_time(pid) == started if started is not None else self._runs_spec(pid, spec)
        if not same:
            return ServiceStatus(
                service, running=False, detail=f"dead (pid {pid} is now another program)"
            )
        return ServiceStatus(service, running=True, pid=pid, detail="running")

    def start(self, service: str) -> ServiceStatus:
        spec = self._spec(service)
        current = self.status(service)
        if current.running:
            return current
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
            log = open(self._state_dir / f"{service}.log", "ab")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ExecutionError(f"cannot prepare state dir {self._state_dir}: {exc}") from exc
        with log:
            try:
                # A new session detaches the service from the caller's process group and
                # terminal, so it survives the job child exiting and job-timeout kills.
                proc = subprocess.Popen(
                    spec.argv,
                    cwd=spec.cwd,
                    env={**os.environ, **spec.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                detail = exc.strerror or str(exc)
                raise ExecutionError(
                    f"cannot start {service}: {exc.filename or spec.argv[0]}: {detail}"
                ) from exc
        self._children[proc.pid] = proc
        self._write_pid(service, proc.pid)
        return self.status(service)

    def stop(self, service: str) -> ServiceStatus:
        spec = self._spec(service)
        current = self.status(service)
        if current.running and current.pid is not None:
            pid = current.pid
            try:
                # We start services as session leaders; signal the whole group then, so
                # helpers they spawned go too. Anything else gets a plain kill.
                pgid: int | None = pid if os.getpgid(pid) == pid else None
            except ProcessLookupError:
                pgid = None
            self._signal(pid, pgid, signal.SIGTERM)
            if not self._wait_gone(pid, pgid, spec.stop_timeout):
                self._signal(pid, pgid, signal.SIGKILL)
                if not self._wait_gone(pid, pgid, _KILL_WAIT):
                    raise ExecutionError(f"{service} (pid {pid}) is still alive after SIGKILL")
            # It may have turned zombie between our last reap and the liveness check.
            self._reap(pid, wait=_KILL_WAIT)
        self._pidfile(service).unlink(missing_ok=True)
        return ServiceStatus(service, running=False, detail="stopped")
