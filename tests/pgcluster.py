"""Real PostgreSQL 15 streaming-replication clusters for tests.

``PgCluster(base_dir, ports)`` runs one leader and any number of followers cloned from it with
``pg_basebackup -c fast -R -X stream``. Server programs run as the ``postgres`` user when the
tests run as root (PostgreSQL refuses root); otherwise as the current user. Each node keeps
its own settings (port, listen address, socket dir, cluster_name) in ``node.conf``, included
from ``postgresql.conf`` and rewritten after every clone. Clients connect over TCP on
``host``: the superuser ``saline`` for checks, ``replicator`` for replication, both with
random passwords (scram-sha-256). ``stop_all()`` stops every instance (``-m immediate``)
and must run in teardown whatever happened.
"""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg2  # type: ignore[import-untyped]

PG_BIN = Path(os.environ.get("SALINE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
START_TIMEOUT = 30.0

T = TypeVar("T")


def pg_available() -> str | None:
    """Why real PostgreSQL cannot run here, or ``None`` when it can."""
    if not (PG_BIN / "postgres").exists():
        return f"PostgreSQL binaries not found in {PG_BIN}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"no {PG_USER!r} user to run PostgreSQL as (running as root)"
        if shutil.which("runuser") is None:
            return "runuser not found"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on loopback right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for(
    condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may fail while a server starts
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what or condition!r}"
                + (f" (last error: {last_exc})" if last_exc else "")
            )
        time.sleep(interval)


@dataclass
class PgNode:
    name: str
    port: int
    root: Path
    host: str
    password: str
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        return self.root / "log" / "postgres.log"

    def connect(self, dbname: str = "postgres") -> Any:
        """An autocommit psycopg2 connection as the superuser ``saline`` over TCP."""
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user="saline",
            password=self.password,
            dbname=dbname,
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class PgCluster:
    def __init__(self, base_dir: Path, ports: list[int], host: str = "127.0.0.1") -> None:
        self.base_dir = base_dir
        self.ports = list(ports)
        self.host = host
        self.password = secrets.token_hex(16)
        self.repl_password = secrets.token_hex(16)
        self.nodes: list[PgNode] = []
        self.leader: PgNode | None = None
        self._as_postgres = os.geteuid() == 0
        base_dir.mkdir(parents=True, exist_ok=True)
        base_dir.chmod(0o755)
        self._own(base_dir)

    # -- plumbing -------------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        if self._as_postgres:
            shutil.chown(path, PG_USER, PG_USER)

    def _run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if env:
            cmd = ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]
        if self._as_postgres:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd="/", check=False
        )
        if proc.returncode != 0:
            shown = " ".join(argv[:2])
            raise RuntimeError(f"{shown} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def _new_node(self, port: int) -> PgNode:
        name = f"pg{len(self.nodes)}"
        node = PgNode(name, port, self.base_dir / name, self.host, self.password)
        for path, mode in (
            (node.root, 0o755),
            (node.data, 0o700),
            (node.sockdir, 0o700),
            (node.logfile.parent, 0o700),
        ):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
            self._own(path)
        self.nodes.append(node)
        return node

    def _write_node_conf(self, node: PgNode) -> None:
        conf = node.data / "node.conf"
        conf.write_text(
            f"port = {node.port}\n"
            f"listen_addresses = '{self.host}'\n"
            f"unix_socket_directories = '{node.sockdir}'\n"
            f"cluster_name = '{node.name}'\n"
        )
        conf.chmod(0o600)
        self._own(conf)

    def _start(self, node: PgNode) -> None:
        node.running = True  # from here on, stop_all() must try to stop it
        try:
            self._run(
                "pg_ctl", "start", "-D", str(node.data), "-l", str(node.logfile),
                "-w", "-t", str(int(START_TIMEOUT)),
                timeout=START_TIMEOUT + 10,
            )  # fmt: skip
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- {node.name} log ---\n{node.log_tail()}") from None
        wait_for(
            lambda: node.query("SELECT 1") == [(1,)], START_TIMEOUT, what=f"{node.name} to answer"
        )

    # -- public API -----------------------------------------------------------------------

    def start_leader(self) -> PgNode:
        if self.leader is not None:
            raise RuntimeError("the leader is already started")
        node = self._new_node(self.ports[0])
        pwfile = node.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        try:
            self._run(
                "initdb", "-D", str(node.data), "-U", "saline", f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--locale=C", "--no-sync",
            )  # fmt: skip
        finally:
            pwfile.unlink()
        hba = node.data / "pg_hba.conf"
        hba.write_text(
            f"local all all trust\n"
            f"host replication replicator {self.host}/32 scram-sha-256\n"
            f"host all saline {self.host}/32 scram-sha-256\n"
        )
        with (node.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# saline test cluster\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "wal_keep_size = '256MB'\n"
                "hot_standby = on\n"
                "hot_standby_feedback = on\n"
                "wal_log_hints = on\n"
                "wal_receiver_status_interval = '1s'\n"
                "wal_retrieve_retry_interval = '1s'\n"
                "fsync = off\n"
                "include_if_exists 'node.conf'\n"
            )
        self._write_node_conf(node)
        self._start(node)
        node.query(
            "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %s", (self.repl_password,)
        )
        self.leader = node
        return node

    def add_follower(self, port: int) -> PgNode:
        leader = self.leader
        if leader is None or not leader.running:
            raise RuntimeError("start the leader before adding followers")
        node = self._new_node(port)
        conninfo = (
            f"host={self.host} port={leader.port} user=replicator "
            f"password={self.repl_password} application_name={node.name}"
        )
        self._run(
            "pg_basebackup", "-d", conninfo, "-D", str(node.data),
            "-c", "fast", "-R", "-X", "stream", "--no-sync",
            timeout=120,
        )  # fmt: skip
        self._write_node_conf(node)
        self._start(node)
        self.wait_streaming(node)
        return node

    def wait_streaming(self, node: PgNode, timeout: float = 20.0) -> None:
        """Until the leader sees ``node`` streaming."""
        leader = self.leader
        assert leader is not None
        wait_for(
            lambda: leader.query(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s "
                "AND state = 'streaming'",
                (node.name,),
            ),
            timeout,
            what=f"{node.name} to stream from {leader.name}",
        )

    def pause_replay(self, node: PgNode) -> None:
        node.query("SELECT pg_wal_replay_pause()")

    def resume_replay(self, node: PgNode) -> None:
        node.query("SELECT pg_wal_replay_resume()")

    def start(self, node: PgNode) -> None:
        """Start a stopped node again."""
        if not node.running:
            self._start(node)

    def stop(self, node: PgNode, mode: str = "immediate") -> None:
        if not node.running:
            return
        try:
            self._run("pg_ctl", "stop", "-D", str(node.data), "-m", mode, "-w", "-t", "30")
        finally:
            node.running = not self._stopped(node)

    def _stopped(self, node: PgNode) -> bool:
        return not (node.data / "postmaster.pid").exists()

    def stop_all(self) -> None:
        """Try to stop every instance, then report any that failed."""
        errors: list[str] = []
        for node in reversed(self.nodes):
            try:
                self.stop(node)
            except Exception as exc:
                errors.append(f"{node.name}: {exc}")
        if errors:
            raise RuntimeError("could not stop: " + "; ".join(errors))


@contextmanager
def pg_cluster(followers: int = 1, host: str = "127.0.0.1") -> Iterator[PgCluster]:
    """A started cluster (leader + ``followers``) in a fresh /tmp dir; always torn down."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="saline-pg-"))
    cluster = PgCluster(base, free_ports(1 + followers), host=host)
    try:
        cluster.start_leader()
        for port in cluster.ports[1:]:
            cluster.add_follower(port)
        yield cluster
    finally:
        try:
            cluster.stop_all()
        finally:
            shutil.rmtree(base, ignore_errors=True)
