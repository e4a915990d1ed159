"""The lab cluster's state from its real services: what ``chef-backend-ctl status`` shows."""

import json
import time
import urllib.request
from typing import Any

from saline.lab.chefha import pg, procs
from saline.lab.chefha.state import BACKENDS

#: leaderl's own threshold: a follower further behind than this is "syncing", not "synced"
SYNC_LAG_BYTES = 50 * 1024 * 1024


def _get_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - lab http URLs
        return json.loads(resp.read())


def etcd_healthy(svc: dict[str, Any]) -> bool:
    try:
        return bool(_get_json(f"{svc['client_url']}/health").get("health") == "true")
    except (OSError, ValueError):
        return False


def es_health(address: str, svc: dict[str, Any]) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = _get_json(f"http://{address}:{svc['port']}/_cluster/health")
    except (OSError, ValueError):
        return None
    return body


def pg_roles(data: dict[str, Any]) -> dict[str, str]:
    """Each backend's PostgreSQL as ``leader``, ``synced``, ``syncing`` or ``offline``."""
    password = data["secrets"]["password"]
    roles: dict[str, str] = {}
    streaming: dict[str, int] = {}
    leader_name = None
    for name in BACKENDS:
        node = data["nodes"][name]
        svc = node["services"]["postgresql"]
        try:
            rows = pg.query(node["address"], svc, password, "SELECT pg_is_in_recovery()")
            (in_recovery,) = rows[0]
        except Exception:  # psycopg2 raises many kinds; any means "cannot use this node"
            roles[name] = "offline"
            continue
        if not in_recovery:
            roles[name] = "leader"
            leader_name = name
            rows = pg.query(
                node["address"], svc, password,
                "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
                "FROM pg_stat_replication WHERE state = 'streaming'",
            )  # fmt: skip
            streaming = {str(app): int(lag or 0) for app, lag in rows}
        else:
            roles[name] = "follower"
    for name, role in roles.items():
        if role != "follower":
            continue
        if leader_name is None or name not in streaming:
            roles[name] = "offline"
        else:
            roles[name] = "synced" if streaming[name] <= SYNC_LAG_BYTES else "syncing"
    return roles


def duration(seconds: float) -> str:
    """``1d 5h 59m 41s`` from the largest non-zero unit down, like the real tool."""
    left = max(int(seconds), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts or unit == "s":
            parts.append(f"{count}{unit}")
    return " ".join(parts)


def status_rows(data: dict[str, Any], node: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(service, local status, time in state, distributed status) for one backend node."""
    now = time.time()
    services = node["services"]

    def local(pid: int | None, svc: dict[str, Any]) -> tuple[str, str]:
        since = duration(now - svc.get("started", now))
        return (f"running (pid {pid})" if pid else "down"), since

    es = services["elasticsearch"]
    es_pid = es["pid"] if procs.running(es) else None
    health = es_health(node["address"], es) if es_pid else None
    if health is None:
        es_dist = "state: red; nodes online: 0/3"
    else:
        nodes_up = health.get("number_of_data_nodes", health.get("number_of_nodes", 0))
        es_dist = f"state: {health['status']}; nodes online: {nodes_up}/3"
    etcd_up = sum(etcd_healthy(data["nodes"][b]["services"]["etcd"]) for b in BACKENDS)
    colour = "green" if etcd_up == 3 else ("yellow" if etcd_up >= 2 else "red")
    etcd = services["etcd"]
    etcd_pid = etcd["pid"] if procs.running(etcd) else None
    roles = pg_roles(data)
    leaders = sum(r == "leader" for r in roles.values())
    synced = sum(r == "synced" for r in roles.values())
    syncing = sum(r == "syncing" for r in roles.values())
    offline = sum(r == "offline" for r in roles.values())
    pgsvc = services["postgresql"]
    pg_pid = pg.postmaster_pid(pgsvc)
    # The lab runs no leaderl: its row reports the election it would make from PostgreSQL.
    rows = [
        ("elasticsearch", *local(es_pid, es), es_dist),
        ("etcd", *local(etcd_pid, etcd), f"health: {colour}; healthy nodes: {etcd_up}/3"),
        (
            "leaderl",
            *local(pg_pid, pgsvc),
            f"leader: {leaders}; waiting: {syncing + offline}; follower: {synced}; total: 3",
        ),
        (
            "postgresql",
            *local(pg_pid, pgsvc),
            f"leader: {leaders}; offline: {offline}; syncing: {syncing}; synced: {synced}",
        ),
    ]
    return rows


def status_table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("Service", "Local Status", "Time in State", "Distributed Node Status")
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) + 2 for i in range(3)]
    return (
        "\n".join(
            "".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + r[3]
            for r in table
        )
        + "\n"
    )
