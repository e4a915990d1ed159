"""etcd members, Elasticsearch and SNTP stand-ins of the lab: detached processes known by pid.

Each service record holds its ``argv`` and a ``marker`` (a path on its command line), so
a pid is only ever signalled while it still is the process the lab started.
"""

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from saline.lab.processes import alive, reap, spawn

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
#: etcd also reads ETCD_* variables: start it with nothing but a PATH
_CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def etcd_argv(name: str, svc: dict[str, Any], initial_cluster: str, token: str) -> list[str]:
    return [
        ETCD,
        "--name", name,
        "--data-dir", svc["data_dir"],
        "--listen-client-urls", svc["client_url"],
        "--advertise-client-urls", svc["client_url"],
        "--listen-peer-urls", svc["peer_url"],
        "--initial-advertise-peer-urls", svc["peer_url"],
        "--initial-cluster", initial_cluster,
        "--initial-cluster-token", token,
        "--initial-cluster-state", "new",
        "--heartbeat-interval", "100",
        "--election-timeout", "1000",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip


def es_argv(address: str, svc: dict[str, Any]) -> list[str]:
    return [
        sys.executable, "-m", "saline.lab.es_standin", "--host", address,
        "--port", str(svc["port"]), "--state-file", svc["state_file"],
    ]  # fmt: skip


def ntp_argv(address: str, svc: dict[str, Any]) -> list[str]:
    return [
        sys.executable, "-m", "saline.lab.ntp_standin", "--host", address,
        "--port", str(svc["port"]), "--skew-file", svc["skew_file"],
    ]  # fmt: skip


def running(svc: dict[str, Any]) -> bool:
    pid = svc.get("pid")
    return isinstance(pid, int) and alive(pid, svc["marker"])


def start(svc: dict[str, Any]) -> int:
    """Start the service's process unless it runs; :returns: its pid."""
    if running(svc):
        return int(svc["pid"])
    env = _CLEAN_ENV if svc["argv"][0] == ETCD else None
    svc["pid"] = spawn(svc["argv"], Path(svc["log"]), env=env)
    svc["started"] = time.time()
    return int(svc["pid"])


def kill(svc: dict[str, Any], sig: int = signal.SIGKILL, timeout: float = 10.0) -> bool:
    """Signal the service's process and wait until it is gone; False when it was not running."""
    if not running(svc):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(svc["pid"], sig)
    deadline = time.monotonic() + timeout
    while running(svc) and time.monotonic() < deadline:
        reap()
        time.sleep(0.02)
    if running(svc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc["pid"], signal.SIGKILL)
    svc["started"] = time.time()
    return True
