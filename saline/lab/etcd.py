"""The etcd cluster holding a lab's leader lease, and the proxies each master reaches it by.

Three real etcd members on free loopback ports, data in ``DIR/leader-etcd/eN`` (separate
from the Chef HA lab's etcd), started with the Chef HA lab's ``procs`` helpers. Every
master talks to them through its own :mod:`saline.lab.tcp_proxy` (one route per member),
so ``saline lab fault etcd-partition mN`` cuts exactly that master off.
"""

import json
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from saline.lab.chefha import health, procs
from saline.lab.lab import LabError

MEMBERS = ("e1", "e2", "e3")


def members(directory: Path, ports: list[int]) -> dict[str, dict[str, Any]]:
    """Service records of the three members; ``ports``: a client and a peer port each."""
    token = f"saline-leader-{secrets.token_hex(4)}"
    records: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(MEMBERS):
        root = directory / "leader-etcd" / name
        client, peer = ports[2 * i], ports[2 * i + 1]
        records[name] = {
            "client_url": f"http://127.0.0.1:{client}",
            "peer_url": f"http://127.0.0.1:{peer}",
            "port": client,
            "data_dir": str(root / "data"),
            "log": str(root / "etcd.log"),
        }
    initial = ",".join(f"{name}={svc['peer_url']}" for name, svc in records.items())
    for name, svc in records.items():
        svc["argv"] = procs.etcd_argv(name, svc, initial, token)
        svc["marker"] = svc["data_dir"]
        svc["stop"] = "kill"  # its data is thrown away: no graceful stop waiting for peers
    return records


def start_members(directory: Path, records: dict[str, dict[str, Any]]) -> None:
    """Start every member on an empty data dir (a previous lab's is wiped)."""
    shutil.rmtree(directory / "leader-etcd", ignore_errors=True)
    for svc in records.values():
        Path(svc["data_dir"]).parent.mkdir(parents=True)
        procs.start(svc)


def wait_healthy(records: dict[str, dict[str, Any]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(records)
    while pending:
        for name, svc in list(pending.items()):
            if not procs.running(svc):
                raise LabError(f"leader etcd member {name} exited; see {svc['log']}")
            if health.etcd_healthy(svc):
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise LabError(f"leader etcd not healthy after {timeout:g}s: {', '.join(pending)}")
        if pending:
            time.sleep(0.05)


def proxy(
    directory: Path, master: str, listen_ports: list[int], records: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The record of ``master``'s proxy: one listen port per member, in member order."""
    state_file = directory / "masters" / master / "etcd-proxy.json"
    routes = [
        f"127.0.0.1:{port}=127.0.0.1:{svc['port']}"
        for port, svc in zip(listen_ports, records.values(), strict=True)
    ]
    argv = [sys.executable, "-m", "saline.lab.tcp_proxy", "--state-file", str(state_file)]
    for route in routes:
        argv += ["--route", route]
    return {
        "argv": argv,
        "marker": str(state_file),
        "state_file": str(state_file),
        "log": str(directory / "logs" / f"etcd-proxy-{master}.log"),
        "endpoints": [f"http://127.0.0.1:{port}" for port in listen_ports],
        "cut": False,
    }


def proxy_state(svc: dict[str, Any]) -> dict[str, Any] | None:
    """What the running proxy last wrote (pid, cut, routes), or None before it has."""
    try:
        data: dict[str, Any] = json.loads(Path(svc["state_file"]).read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("pid") == svc.get("pid") else None


def wait_proxy(svc: dict[str, Any], cut: bool, timeout: float = 10.0) -> None:
    """Wait until the proxy reports itself ``cut`` (or open); it writes that after acting."""
    deadline = time.monotonic() + timeout
    while True:
        if not procs.running(svc):
            raise LabError(f"the etcd proxy exited; see {svc['log']}")
        state = proxy_state(svc)
        if state is not None and state.get("cut") is cut:
            return
        if time.monotonic() > deadline:
            raise LabError(f"the etcd proxy did not switch {'off' if cut else 'on'} in time")
        time.sleep(0.02)
