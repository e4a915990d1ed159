"""SystemdProvider: services are systemd units, driven through ``systemctl``."""

import subprocess

from minion.services.base import ServiceProvider, ServiceStatus
from saline.errors import ExecutionError

_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "UnitFileState")
#: UnitFileState values for which ``systemctl is-enabled`` exits 0
_ENABLED_STATES = frozenset(
    {"enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient"}
)


class SystemdProvider(ServiceProvider):
    """Query units with ``systemctl show`` and act with ``systemctl start|stop|restart``."""

    name = "systemd"

    def __init__(
        self,
        systemctl: str = "systemctl",
        query_timeout: float = 10.0,
        action_timeout: float = 90.0,
    ) -> None:
        self._systemctl = systemctl
        self._query_timeout = query_timeout
        self._action_timeout = action_timeout

    def _run(self, args: list[str], timeout: float) -> "subprocess.CompletedProcess[str]":
        argv = [self._systemctl, *args]
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ExecutionError(f"systemctl not found: {self._systemctl}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ExecutionError(f"{' '.join(argv)} timed out after {timeout:g}s") from exc

    @staticmethod
    def _check_name(service: str) -> None:
        # "--" already stops option parsing; an empty or whitespace name is still nonsense.
        if not service or not service.strip() or "\n" in service:
            raise ExecutionError(f"invalid unit name {service!r}")

    def status(self, service: str) -> ServiceStatus:
        self._check_name(service)
        # One `show` gives what is-active, is-enabled and `show -p MainPID` would, in one fork.
        proc = self._run(
            ["show", "--property", ",".join(_PROPERTIES), "--", service], self._query_timeout
        )
        if proc.returncode != 0:
            raise ExecutionError(
                f"systemctl show {service} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        props: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        if props.get("LoadState") == "not-found":
            raise ExecutionError(f"unknown unit: {service}")
        active = props.get("ActiveState", "")
        try:
            main_pid = int(props.get("MainPID", "0"))
        except ValueError:
            main_pid = 0
        file_state = props.get("UnitFileState", "")
        return ServiceStatus(
            name=service,
            running=active == "active",
            pid=main_pid or None,
            enabled=(file_state in _ENABLED_STATES) if file_state else None,
            detail=f"{active} ({props.get('SubState', '')})",
        )

    def _act(self, action: str, service: str) -> ServiceStatus:
        self.status(service)  # unknown unit -> ExecutionError before acting
        proc = self._run([action, "--", service], self._action_timeout)
        if proc.returncode != 0:
            raise ExecutionError(
                f"systemctl {action} {service} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return self.status(service)

    def start(self, service: str) -> ServiceStatus:
        return self._act("start", service)

    def stop(self, service: str) -> ServiceStatus:
        return self._act("stop", service)

    def restart(self, service: str) -> ServiceStatus:
        return self._act("restart", service)

    def reload(self, service: str) -> ServiceStatus:
        return self._act("reload", service)

    def enable(self, service: str) -> ServiceStatus:
        return self._act("enable", service)

    def disable(self, service: str) -> ServiceStatus:
        return self._act("disable", service)
