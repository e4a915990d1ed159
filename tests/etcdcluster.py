"""A real three-member etcd cluster on loopback, for tests.

Needs the ``etcd`` binary (Debian package ``etcd-server``, 3.4). Each member runs as a plain
subprocess with a clean environment (etcd also reads ``ETCD_*`` variables) and its own data
dir under ``base_dir``. Restarting a member reuses its command line: with an existing data
dir etcd ignores the ``--initial-*`` flags, so the member simply rejoins.

    cluster = EtcdCluster(tmp_path)
    try:
        cluster.start()
        cluster.wait_healthy(10)
        cluster.kill("etcd1")
        cluster.restart("etcd1")
    finally:
        cluster.stop_all()
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_healthy(client_url: str, timeout: float = 1.0) -> bool:
    """True when ``GET /health`` answers 200 with ``{"health": "true"}``."""
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=timeout) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


@dataclass
class Member:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path
    argv: list[str] = field(default_factory=list)
    proc: "subprocess.Popen[bytes] | None" = None
    log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    def __init__(self, base_dir: Path | str, host: str = "127.0.0.1", size: int = 3) -> None:
        self.base_dir = Path(base_dir)
        self.host = host
        self.token = f"saline-test-{os.getpid()}-{time.monotonic_ns()}"
        self.members: dict[str, Member] = {}
        for i in range(1, size + 1):
            name = f"etcd{i}"
            self.members[name] = Member(
                name=name,
                client_url=f"http://{host}:{free_port(host)}",
                peer_url=f"http://{host}:{free_port(host)}",
                data_dir=self.base_dir / name / "data",
                log_path=self.base_dir / name / "etcd.log",
            )
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members.values())
        for m in self.members.values():
            m.argv = [
                ETCD,
                "--name", m.name,
                "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url,
                "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url,
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial,
                "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "100",
                "--election-timeout", "1000",
                "--logger", "zap",
                "--log-outputs", "stderr",
            ]  # fmt: skip

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members.values()]

    @property
    def endpoints(self) -> str:
        return ",".join(self.client_urls)

    def start(self) -> "EtcdCluster":
        for name in self.members:
            self._spawn(name)
        return self

    def _spawn(self, name: str) -> None:
        m = self.members[name]
        if m.running:
            raise RuntimeError(f"{name} is already running")
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if m.log is not None:
            m.log.close()
        m.log = open(m.log_path, "ab")  # noqa: SIM115 - closed in stop_all
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # clean: no ETCD_* leaks in
        m.proc = subprocess.Popen(
            m.argv, env=env, stdin=subprocess.DEVNULL, stdout=m.log, stderr=m.log
        )

    def wait_healthy(self, timeout: float = 15.0, members: list[str] | None = None) -> None:
        """Wait until every (given) member answers ``GET /health`` with health true."""
        names = members if members is not None else list(self.members)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while True:
            for name in sorted(pending):
                m = self.members[name]
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {m.proc.returncode}: {self.tail(name)}")
                if http_healthy(m.client_url, timeout=0.5):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd members not healthy after {timeout}s: {sorted(pending)}")
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        """SIGKILL one member and reap it."""
        m = self.members[name]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        """Start a killed member again with the same command line: it rejoins."""
        self.kill(name)
        self._spawn(name)

    def stop_all(self) -> None:
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.proc.wait(timeout=10)
            if m.log is not None:
                m.log.close()
                m.log = None

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            text = self.members[name].log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
