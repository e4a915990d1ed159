"""MinionConfig: every setting of ``saline minion``, validated by pydantic."""

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from minion.beacons.config import BeaconsConfig
from saline.config import load_yaml_model, resolve_config_path
from saline.listen import LISTEN_PATTERN
from saline.protocol import DEFAULT_MAX_FUNCTION_TIMEOUT
from saline.wire import DEFAULT_MAX_FRAME, MINION_ID_PATTERN

DEFAULT_MINION_CONFIG = "/etc/saline/minion.yaml"
DEFAULT_MASTER_PORT = 4606

#: a host name or IPv4 address as a ``master`` entry may give it (IPv6 is checked apart)
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")

#: POSIX portable environment variable names (IEEE Std 1003.1, 8.1): no "=", no leading digit
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ServiceSpec(BaseModel):
    """A service run by saline's own process supervisor (the lab; nodes without systemd)."""

    model_config = ConfigDict(extra="forbid")

    #: command line, exec'd directly (never through a shell)
    argv: list[str] = Field(min_length=1)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    #: seconds to wait after SIGTERM before SIGKILL
    stop_timeout: float = Field(default=10.0, gt=0)


class MinionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: minion id; defaults to the host's fqdn
    id: str | None = Field(default=None, pattern=MINION_ID_PATTERN)
    #: the port of a ``master`` entry that names none (declared first: ``master`` is
    #: checked against it)
    master_port: int = Field(default=DEFAULT_MASTER_PORT, ge=1, le=65535)
    #: the master, or several masters sharing one store and one key: each ``HOST``,
    #: ``HOST:PORT``, ``V6`` or ``[V6]:PORT`` (no port: ``master_port``). The first is the
    #: preferred master (events go there while it is up); see :attr:`masters`
    master: str | list[str] = "127.0.0.1"
    #: fingerprint (``saline key finger``) the master's key must have; refuse any other
    master_finger: str | None = None
    #: the master's public key (Z85), or a file holding it; required to start CurveZMQ
    master_pub: str | None = None
    pki_dir: Path = Path("/etc/saline/pki/minion")
    #: return spool and service supervisor state
    cachedir: Path = Path("/var/lib/saline/minion")
    log_file: Path | None = None
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    #: ``HOST:PORT`` of this minion's own Prometheus metrics (job and beacon durations,
    #: spool depth, reconnects); None: off, and prometheus_client is never loaded
    metrics_listen: str | None = Field(default=None, pattern=LISTEN_PATTERN)
    #: static grains merged over the collected ones (e.g. role: backend)
    grains: dict[str, Any] = Field(default_factory=dict)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    #: seconds between hellos while the key is pending
    acceptance_wait: float = Field(default=5.0, gt=0)
    #: seconds between resends of returns the master has not acknowledged
    return_retry: float = Field(default=5.0, gt=0)
    #: upper bound on any function's run time, whatever the job asks (``timeout=``) or the
    #: function declares
    max_function_timeout: float = Field(default=DEFAULT_MAX_FUNCTION_TIMEOUT, gt=0)
    max_frame_bytes: int = Field(default=DEFAULT_MAX_FRAME, ge=1024)
    #: service provider: systemd when present, else saline's supervisor
    service_provider: Literal["auto", "systemd", "supervisor"] = "auto"
    #: services known to the supervisor provider
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    #: beacons run inside the minion: instance name -> {beacon, interval, reassert, params}
    beacons: BeaconsConfig = Field(default_factory=dict)
    #: environment variables set in the minion process at start (see :func:`apply_env`), so
    #: beacons, jobs and the commands jobs run all see them (the lab points
    #: SALINE_CHEF_BACKEND_CTL at a per-node shim this way)
    env: dict[str, str] = Field(default_factory=dict)
    #: masterless use (``saline call --local``): the state tree served as ``saline://`` on
    #: this node, searched in order (a job from the master uses the master's instead)
    file_roots: list[Path] = Field(default_factory=lambda: [Path("/srv/saline/states")])
    #: masterless use: pillar trees, each with its own top.yaml, compiled on this node
    #: with its own id and grains
    pillar_roots: list[Path] = Field(default_factory=lambda: [Path("/srv/saline/pillar")])

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        # checked here rather than by os.environ at start, so the error names file and line
        for name, value in env.items():
            if not re.fullmatch(ENV_NAME_PATTERN, name):
                raise ValueError(
                    f"invalid environment variable name {name!r} (allowed: {ENV_NAME_PATTERN})"
                )
            if "\0" in value:
                raise ValueError(f"the value of {name} contains a NUL character")
        return env

    @field_validator("master")
    @classmethod
    def _check_masters(cls, master: str | list[str], info: ValidationInfo) -> str | list[str]:
        # parsed here, so a bad entry fails at load with file, line and the entry itself
        parse_masters(master, info.data.get("master_port", DEFAULT_MASTER_PORT))
        return master

    @property
    def masters(self) -> list[tuple[str, int]]:
        """The masters as (host, port), in config order (the first is the preferred one)."""
        return parse_masters(self.master, self.master_port)


def parse_masters(master: str | list[str], default_port: int) -> list[tuple[str, int]]:
    """Every entry of ``master`` as (host, port), in order.

    :raises ValueError: for an entry that does not parse, a master named twice, or none.
    """
    entries = [master] if isinstance(master, str) else master
    if not entries:
        raise ValueError("give at least one master")
    parsed: list[tuple[str, int]] = []
    seen: dict[tuple[str, int], str] = {}
    for entry in entries:
        host, port = parse_master(entry, default_port)
        # one master however written: case of a name, spelling of an IPv6 address
        same = (str(ipaddress.IPv6Address(host)) if ":" in host else host.lower(), port)
        if same in seen:
            raise ValueError(f"master entry {entry!r} names the same master as {seen[same]!r}")
        seen[same] = entry
        parsed.append((host, port))
    return parsed


def parse_master(entry: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, a bare IPv6 address or ``[V6]:PORT`` → (host, port).

    :raises ValueError: naming the entry and what is wrong with it.
    """
    text = entry.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"master entry {entry!r}: no closing ']' after the IPv6 address")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"master entry {entry!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
        _check_ipv6(entry, host)
    elif text.count(":") > 1:  # a bare IPv6 address, as a single master always allowed
        host = text
        _check_ipv6(entry, host)
    else:
        host, sep, port_part = text.partition(":")
        if sep:
            port_text = port_part
        if not _HOST_PATTERN.match(host):
            raise ValueError(f"master entry {entry!r}: {host!r} is not a host name or address")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"master entry {entry!r}: port {port_text!r} is not 1-65535")
    return host, int(port_text)


def _check_ipv6(entry: str, host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError as e:
        raise ValueError(f"master entry {entry!r}: {host!r} is not an IPv6 address") from e


def master_label(host: str, port: int) -> str:
    """``host:port`` as log lines and errors name a master (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_minion_config(path: str | None = None) -> tuple[MinionConfig, Path]:
    resolved = resolve_config_path(path, DEFAULT_MINION_CONFIG)
    return load_yaml_model(resolved, MinionConfig, foreign=_MASTER_ONLY), resolved


#: settings only a master config has: such a file given to a minion is named for what it is
#: (file_roots and pillar_roots are both's: a minion has them for masterless use)
_MASTER_ONLY = (
    "a master config",
    frozenset(
        {
            "interface",
            "port",
            "data_dir",
            "sock_dir",
            "auto_accept",
            "job_timeout",
            "client_acl",
            "schedule",
            "reactor_dirs",
            "runbook_roots",
            "minion_grains",
            "nodegroups",
        }
    ),
)


def apply_env(config: MinionConfig) -> None:
    """Set ``config.env`` in this process's environment, overriding inherited values.

    Call it once at start, before beacons or jobs run: they read ``os.environ`` directly and
    jobs' children inherit it, so nothing else needs to pass the variables along.
    """
    os.environ.update(config.env)
