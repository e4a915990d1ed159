"""chef_backend.*: inspect and drive the Chef Backend (HA) cluster through ``chef-backend-ctl``.

The tool is ``chef-backend-ctl`` from PATH unless ``SALINE_CHEF_BACKEND_CTL`` names another
executable (the lab points it at a shim). Commands run as argv lists, never through a shell,
and every argument is validated before anything runs.

``install_from_pillar`` and ``pillar_matches`` (shared with ``chef_server.*``) hand a file
such as ``chef-backend-secrets.json`` from one node to another through the pillar: see
``chef_server.install_from_pillar``.
"""

import ipaddress
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minion.modules import chef_server, cmd, pg_reclone, postgres
from minion.modules.base import Context, Outcome
from saline.errors import ExecutionError

TOOL_ENV = "SALINE_CHEF_BACKEND_CTL"
DEFAULT_TOOL = "chef-backend-ctl"
#: the node's PostgreSQL data directory for ``reclone`` when it is given no ``data_dir``
PGDATA_ENV = "SALINE_CHEF_BACKEND_PGDATA"

#: services every backend node runs; one missing from ``status`` makes the node unhealthy
EXPECTED_SERVICES = ("elasticsearch", "etcd", "leaderl", "postgresql")
#: services ``start``/``stop``/``restart`` accept (the reference's "Services and Secrets")
SERVICES = frozenset({*EXPECTED_SERVICES, "epmd"})

_HEADER = re.compile(r"^Service\s+Local Status\s+Time in State\s+Distributed Node Status\s*$")
_ROW = re.compile(
    r"^(?P<service>[A-Za-z0-9_.-]+)\s+"
    r"(?P<local>[a-z]+)(?:\s+\(pid (?P<pid>\d+)\))?\s+"
    r"(?P<time>\d+[dhms](?: \d+[dhms])*)"
    r"(?:\s+(?P<dist>\S.*?))?\s*$"
)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _tool() -> str:
    return os.environ.get(TOOL_ENV) or DEFAULT_TOOL


def _run(ctx: Context, args: list[str], timeout: float) -> Outcome:
    return cmd.run(ctx, [_tool(), *args], timeout=timeout)


def _seconds(text: str) -> int:
    return sum(int(part[:-1]) * _UNIT_SECONDS[part[-1]] for part in text.split())


def _parse_distributed(text: str, line: str) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for item in text.split(";"):
        key, sep, value = item.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ExecutionError(
                f"cannot parse distributed status {item.strip()!r} in status line: {line!r}"
            )
        name = re.sub(r"\s+", "_", key.lower())
        pairs[name] = int(value) if value.isascii() and value.isdigit() else value
    return pairs


def _distributed_problems(service: str, dist: dict[str, Any]) -> list[str]:
    """Reasons the cluster-wide view of a service is not nominal (empty when it is)."""
    want: dict[str, Any]
    if service == "elasticsearch":
        want = {"state": "green"}
    elif service == "etcd":
        want = {"health": "green"}
    elif service == "leaderl":
        want = {"leader": 1, "waiting": 0}
    elif service == "postgresql":
        want = {"leader": 1, "offline": 0, "syncing": 0}
    else:
        want = {}
    problems = []
    for key, expected in want.items():
        if key not in dist:
            problems.append(f"{service}: no {key} in distributed status")
        elif dist[key] != expected:
            problems.append(f"{service}: {key} is {dist[key]!r}, want {expected!r}")
    return problems


def parse_status(text: str) -> dict[str, Any]:
    """Parse ``chef-backend-ctl status`` output (pure; no command is run).

    Returns ``{"healthy": bool, "problems": [str], "services": {name: {"local", "pid",
    "time_in_state", "seconds", "distributed", "healthy"}}}``. ``healthy`` is true when every
    expected service is present and running and its distributed status is nominal
    (elasticsearch state green; etcd health green; leaderl leader 1, waiting 0; postgresql
    leader 1, offline 0, syncing 0). ``problems`` says why not, one sentence per reason.

    :raises ExecutionError: no header, or a line that is not a service row (named in the
        message), or no service at all.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ExecutionError("empty chef-backend-ctl status output")
    if not _HEADER.match(lines[0].strip()):
        raise ExecutionError(f"unexpected chef-backend-ctl status header line: {lines[0]!r}")
    services: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for line in lines[1:]:
        match = _ROW.match(line.strip())
        if match is None:
            raise ExecutionError(f"cannot parse chef-backend-ctl status line: {line!r}")
        name = match["service"]
        if name in services:
            raise ExecutionError(f"service {name!r} listed twice in status line: {line!r}")
        dist = _parse_distributed(match["dist"], line) if match["dist"] else {}
        reasons = [] if match["local"] == "running" else [f"{name}: local status {match['local']}"]
        reasons += _distributed_problems(name, dist)
        services[name] = {
            "local": match["local"],
            "pid": int(match["pid"]) if match["pid"] else None,
            "time_in_state": match["time"],
            "seconds": _seconds(match["time"]),
            "distributed": dist,
            "healthy": not reasons,
        }
        problems += reasons
    if not services:
        raise ExecutionError("chef-backend-ctl status listed no services")
    problems += [f"{name}: not listed" for name in EXPECTED_SERVICES if name not in services]
    return {"healthy": not problems, "problems": problems, "services": services}


def status(ctx: Context, timeout: float = 60) -> dict[str, Any]:
    """Return the parsed ``chef-backend-ctl status`` table and whether the cluster is healthy.

    See ``parse_status`` for the shape. A non-zero exit is tolerated when the table parses
    (the tool may exit non-zero while a service is down).

    Args:
        timeout: seconds before the command is killed.
    """
    outcome = _run(ctx, ["status"], timeout)
    try:
        return parse_status(outcome.value["stdout"])
    except ExecutionError as exc:
        if outcome.retcode != 0:
            stderr = outcome.value["stderr"].strip()
            raise ExecutionError(
                f"chef-backend-ctl status exited {outcome.retcode}: {stderr or exc}"
            ) from exc
        raise


def cluster_status(ctx: Context, timeout: float = 60) -> Any:
    """Return the parsed JSON of ``chef-backend-ctl cluster-status --json``.

    Args:
        timeout: seconds before the command is killed.
    """
    outcome = _run(ctx, ["cluster-status", "--json"], timeout)
    if outcome.retcode != 0:
        stderr = outcome.value["stderr"].strip()
        raise ExecutionError(f"chef-backend-ctl cluster-status exited {outcome.retcode}: {stderr}")
    try:
        return json.loads(outcome.value["stdout"])
    except ValueError as exc:
        raise ExecutionError(
            f"chef-backend-ctl cluster-status --json: invalid JSON: {exc}"
        ) from exc


def reconfigure(ctx: Context, timeout: float = 1800) -> Outcome:
    """Run ``chef-backend-ctl reconfigure``; return its stdout, stderr and retcode.

    Args:
        timeout: seconds before the command is killed.
    """
    return _run(ctx, ["reconfigure"], timeout)


def _is_hostname(name: str) -> bool:
    labels = name.removesuffix(".").split(".")
    # An all-numeric last label is a mistyped IP address (10.0.0.256), not a name (RFC 3696).
    return (
        len(name) <= 253
        and all(_HOST_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )


def _check_host(value: Any, field: str, allow_ip: bool) -> str:
    if isinstance(value, str) and value:
        if allow_ip:
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                pass
        if _is_hostname(value):
            return value
    kind = "an IP address or a hostname" if allow_ip else "a hostname (FQDN)"
    raise ExecutionError(
        f"{field} must be {kind} (labels of letters, digits and inner hyphens), got {value!r}"
    )


def pgsql_follow(
    ctx: Context, leader: str, force_basebackup: bool | str = False, timeout: float = 3600
) -> Outcome:
    """Make this node's PostgreSQL follow LEADER (``chef-backend-ctl pgsql-follow``).

    Args:
        leader: IP address or hostname of the current PostgreSQL leader.
        force_basebackup: true to re-sync from a fresh base backup (``--force-basebackup``).
        timeout: seconds before the command is killed.
    """
    host = _check_host(leader, "leader", allow_ip=True)
    flags = ["--force-basebackup"] if cmd.parse_bool(force_basebackup, "force_basebackup") else []
    return _run(ctx, ["pgsql-follow", *flags, host], timeout)


def reclone(
    ctx: Context,
    leader_host: str,
    leader_port: int = 5432,
    host: str = "127.0.0.1",
    port: int = 5432,
    data_dir: str | None = None,
    keep: list[str] | None = None,
    stream_timeout: float = 30,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Re-clone this follower from a fresh base backup of the leader, beside its old copy.

    Unlike ``pgsql_follow --force-basebackup`` (which wipes the data directory first), the
    backup goes to ``DATA.saline-new`` while the old copy runs on; only a complete backup is
    swapped in (PostgreSQL stopped and started with ``chef-backend-ctl``), and the old copy
    is removed only once the new one streams. A failed backup leaves the old copy untouched
    and running; a new copy that does not stream is swapped back out and the old one started.

    Args:
        leader_host: the leader's PostgreSQL address (it must lead: the caller checks).
        leader_port: its port.
        host: this follower's PostgreSQL address, to tell that the new copy streams.
        port: its port.
        data_dir: the data directory (default: ``SALINE_CHEF_BACKEND_PGDATA``).
        keep: files of the old copy that are the node's own, copied over the backup's.
        stream_timeout: seconds the new copy has to stream before it is swapped back out.
        timeout: seconds the base backup may take.
    """
    leader = _check_host(leader_host, "leader_host", allow_ip=True)
    directory = data_dir or os.environ.get(PGDATA_ENV)
    if not directory or not os.path.isabs(directory):
        raise ExecutionError(f"data_dir must be an absolute path (or set {PGDATA_ENV})")
    files = keep or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ExecutionError(f"keep must be a list of file names, got {keep!r}")

    def service(action: Callable[..., Outcome]) -> Callable[[], None]:
        def run() -> None:
            outcome = action(ctx, "postgresql")
            if outcome.retcode != 0:
                said = pg_reclone.last_line(outcome.value["stderr"] or outcome.value["stdout"])
                raise ExecutionError(f"{action.__name__} postgresql failed: {said}")

        return run

    def streaming() -> str | None:
        # its own view only: whether it streams (the leader is asked by the ladder's probes)
        state = postgres.replication(ctx, host=host, port=port, timeout=2, leader_view=False)
        receiver = state.get("wal_receiver") or {}
        return receiver.get("sender_host") if receiver.get("status") == "streaming" else None

    node = pg_reclone.Node(stop=service(stop), start=service(start), streaming=streaming)
    return pg_reclone.reclone(
        Path(directory),
        (leader, int(leader_port)),
        node,
        keep=files,
        backup_timeout=float(timeout),
        stream_timeout=float(stream_timeout),
    )


def gen_server_config(ctx: Context, fqdn: str, path: str, timeout: float = 120) -> Outcome:
    """Write a frontend's chef-server.rb (``chef-backend-ctl gen-server-config FQDN -f PATH``).

    Args:
        fqdn: fully qualified name of the frontend the configuration is for.
        path: file to write the configuration to.
        timeout: seconds before the command is killed.
    """
    host = _check_host(fqdn, "fqdn", allow_ip=False)
    if not isinstance(path, str) or not path or path.startswith("-") or "\0" in path:
        raise ExecutionError(f"path must be a file path not starting with '-', got {path!r}")
    return _run(ctx, ["gen-server-config", host, "-f", path], timeout)


def _check_service(service: Any) -> str:
    if not isinstance(service, str) or service not in SERVICES:
        raise ExecutionError(
            f"service must be one of {', '.join(sorted(SERVICES))}, got {service!r}"
        )
    return service


def start(ctx: Context, service: str, timeout: float = 300) -> Outcome:
    """Start one backend service (``chef-backend-ctl start SERVICE``).

    Args:
        service: one of elasticsearch, epmd, etcd, leaderl, postgresql.
        timeout: seconds before the command is killed.
    """
    return _run(ctx, ["start", _check_service(service)], timeout)


def stop(ctx: Context, service: str, timeout: float = 300) -> Outcome:
    """Stop one backend service (``chef-backend-ctl stop SERVICE``).

    Args:
        service: one of elasticsearch, epmd, etcd, leaderl, postgresql.
        timeout: seconds before the command is killed.
    """
    return _run(ctx, ["stop", _check_service(service)], timeout)


def restart(ctx: Context, service: str, timeout: float = 300) -> Outcome:
    """Restart one backend service (``chef-backend-ctl restart SERVICE``).

    Args:
        service: one of elasticsearch, epmd, etcd, leaderl, postgresql.
        timeout: seconds before the command is killed.
    """
    return _run(ctx, ["restart", _check_service(service)], timeout)


def create_cluster(ctx: Context, timeout: float = 1800) -> Outcome:
    """Bootstrap the cluster on this, its first node (``chef-backend-ctl create-cluster``).

    Runs with ``--accept-license --yes``: a job has no terminal to answer prompts on. This node
    writes the shared ``/etc/chef-backend/chef-backend-secrets.json`` the others join with.

    Args:
        timeout: seconds before the command is killed.
    """
    return _run(ctx, ["create-cluster", "--accept-license", "--yes"], timeout)


def join_cluster(ctx: Context, leader: str, secrets: str, timeout: float = 1800) -> Outcome:
    """Join this node to the cluster (``chef-backend-ctl join-cluster LEADER -s SECRETS``).

    Runs with ``--accept-license --yes``. Join nodes one after another, never in parallel
    (the reference: the cluster may fail to become available otherwise).

    Args:
        leader: IP address or hostname of the node that created the cluster.
        secrets: absolute path of this node's copy of ``chef-backend-secrets.json``.
        timeout: seconds before the command is killed.
    """
    host = _check_host(leader, "leader", allow_ip=True)
    if (
        not isinstance(secrets, str)
        or not os.path.isabs(secrets)
        or secrets.startswith("-")
        or "\0" in secrets
    ):
        raise ExecutionError(f"secrets must be an absolute file path, got {secrets!r}")
    argv = ["join-cluster", host, "-s", secrets, "--accept-license", "--yes"]
    return _run(ctx, argv, timeout)


#: jobs' time limits when they give no ``timeout=`` (the commands' own, above): these
#: rebuild or re-clone a node's services and take many minutes on a real cluster
TIMEOUTS: dict[Callable[..., Any], float] = {
    reconfigure: 1800.0,
    pgsql_follow: 3600.0,
    reclone: 3700.0,
    create_cluster: 1800.0,
    join_cluster: 1800.0,
}

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "status": status,
    "cluster_status": cluster_status,
    "reconfigure": reconfigure,
    "pgsql_follow": pgsql_follow,
    "reclone": reclone,
    "gen_server_config": gen_server_config,
    "start": start,
    "stop": stop,
    "restart": restart,
    "create_cluster": create_cluster,
    "join_cluster": join_cluster,
    # the same functions as chef_server.*: a runbook step on a backend then reads as one
    "install_from_pillar": chef_server.install_from_pillar,
    "pillar_matches": chef_server.pillar_matches,
}
