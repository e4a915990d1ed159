"""Real PostgreSQL 15 for the lab: a leader and streaming followers, one per backend node.

Server programs run as the ``postgres`` user when the lab runs as root (PostgreSQL refuses
root). Each node listens on its own loopback address, port 5432, socket in a private dir.
Per-node settings live in ``node.conf`` (included from ``postgresql.conf``) and are rewritten
after every clone, because ``pg_basebackup`` copies the leader's files. Clients use TCP: the
superuser ``saline`` for checks and fixes, ``replicator`` for replication.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]

from saline.lab.chefha.state import ChefLabError

PG_BIN = Path(os.environ.get("SALINE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
START_TIMEOUT = 30

#: settings of every node; small WAL retention so "the WAL it needs is gone" is reachable
_CONF = """
# saline lab
wal_level = replica
max_wal_senders = 10
wal_keep_size = '64MB'
max_wal_size = '96MB'
min_wal_size = '32MB'
hot_standby = on
hot_standby_feedback = on
wal_log_hints = on
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '1s'
wal_sender_timeout = '10s'
wal_receiver_timeout = '10s'
fsync = off
include_if_exists 'node.conf'
"""


def _as_postgres() -> bool:
    return os.geteuid() == 0


def own(path: Path) -> None:
    if _as_postgres():
        shutil.chown(path, PG_USER, PG_USER)


def run(*argv: str, timeout: float = 120.0) -> str:
    """Run a PostgreSQL program (as ``postgres`` when root); raise with its stderr on failure."""
    cmd = [str(PG_BIN / argv[0]), *argv[1:]]
    if _as_postgres():
        cmd = ["runuser", "-u", PG_USER, "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
    if proc.returncode != 0:
        what = " ".join(argv[:2])
        raise ChefLabError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def prepare_dirs(svc: dict[str, Any]) -> None:
    for key, mode in (("data_dir", 0o700), ("sock_dir", 0o700)):
        path = Path(svc[key])
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        own(path)
    log_dir = Path(svc["log"]).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    own(log_dir)


def write_node_conf(svc: dict[str, Any], address: str, name: str) -> None:
    conf = Path(svc["data_dir"]) / "node.conf"
    conf.write_text(
        f"port = {svc['port']}\n"
        f"listen_addresses = '{address}'\n"
        f"unix_socket_directories = '{svc['sock_dir']}'\n"
        f"cluster_name = '{name}'\n"
    )
    conf.chmod(0o600)
    own(conf)


def write_hba(svc: dict[str, Any], networks: list[str]) -> None:
    """pg_hba.conf as chef-backend renders it: two lines per md5_auth_cidr_addresses entry."""
    lines = ["local all all trust"]
    for net in networks:
        lines.append(f"host all all {net} scram-sha-256")
        lines.append(f"host replication replicator {net} scram-sha-256")
    hba = Path(svc["data_dir"]) / "pg_hba.conf"
    hba.write_text("\n".join(lines) + "\n")
    own(hba)


def postmaster_pid(svc: dict[str, Any]) -> int | None:
    """The running postmaster's pid, or None when the node is stopped."""
    try:
        pid = int((Path(svc["data_dir"]) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def connect(address: str, svc: dict[str, Any], password: str, timeout: int = 3) -> Any:
    conn = psycopg2.connect(
        host=address,
        port=svc["port"],
        user="saline",
        password=password,
        dbname="postgres",
        connect_timeout=timeout,
    )
    conn.autocommit = True
    return conn


def query(address: str, svc: dict[str, Any], password: str, sql: str, params: Any = ()) -> Any:
    conn = connect(address, svc, password)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def start(svc: dict[str, Any]) -> int:
    """Start the node (no-op when running); :returns: the postmaster pid."""
    pid = postmaster_pid(svc)
    if pid is not None:
        return pid
    # a crash (stop -m immediate, kill -9) leaves a stale pid file that pg_ctl handles itself
    run(
        "pg_ctl", "start", "-D", svc["data_dir"], "-l", svc["log"], "-w",
        "-t", str(START_TIMEOUT), timeout=START_TIMEOUT + 10,
    )  # fmt: skip
    pid = postmaster_pid(svc)
    if pid is None:
        raise ChefLabError(f"PostgreSQL in {svc['data_dir']} did not start; see {svc['log']}")
    svc["started"] = time.time()
    return pid


def stop(svc: dict[str, Any], mode: str = "fast") -> None:
    pid = postmaster_pid(svc)
    if pid is None:
        return
    continue_stopped_children(pid)  # a stopped process never exits: pg_ctl would time out
    run("pg_ctl", "stop", "-D", svc["data_dir"], "-m", mode, "-w", "-t", "30", timeout=40)
    svc["started"] = time.time()


def continue_stopped_children(postmaster: int) -> list[int]:
    """SIGCONT every stopped (state T) child of ``postmaster`` (the fault pg-stall-sender
    stops a WAL sender); returns their pids."""
    woken = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] == "T" and int(fields[1]) == postmaster:
            pid = int(stat.parent.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                woken.append(pid)
    return woken


def init_leader(svc: dict[str, Any], address: str, name: str, secrets: dict[str, str]) -> None:
    """initdb, configure and start the first leader; create the replication role."""
    prepare_dirs(svc)
    pwfile = Path(svc["sock_dir"]) / "pwfile"
    pwfile.write_text(secrets["password"] + "\n")
    pwfile.chmod(0o600)
    own(pwfile)
    try:
        run(
            "initdb", "-D", svc["data_dir"], "-U", "saline", f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
    finally:
        pwfile.unlink()
    with (Path(svc["data_dir"]) / "postgresql.conf").open("a") as conf:
        conf.write(_CONF)
    write_hba(svc, ["samehost", "samenet"])
    write_node_conf(svc, address, name)
    start(svc)
    query(
        address, svc, secrets["password"],
        "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %s", (secrets["repl_password"],),
    )  # fmt: skip


def conninfo(leader_address: str, port: int, repl_password: str, name: str) -> str:
    return (
        f"host={leader_address} port={port} user=replicator "
        f"password={repl_password} application_name={name}"
    )


def clone(
    svc: dict[str, Any], address: str, name: str, leader: tuple[str, int], repl_password: str
) -> None:
    """Wipe the node and re-create it from a fresh base backup of the leader, then start it."""
    stop(svc, "immediate")
    shutil.rmtree(svc["data_dir"], ignore_errors=True)
    prepare_dirs(svc)
    run(
        "pg_basebackup", "-d", conninfo(leader[0], leader[1], repl_password, name),
        "-D", svc["data_dir"], "-c", "fast", "-R", "-X", "stream", "--no-sync",
    )  # fmt: skip
    write_node_conf(svc, address, name)
    start(svc)


def follow(
    svc: dict[str, Any], address: str, name: str, leader: tuple[str, int], secrets: dict[str, str]
) -> None:
    """Point a running (or stopped) follower at ``leader`` without re-cloning."""
    start(svc)
    info = conninfo(leader[0], leader[1], secrets["repl_password"], name)
    query(address, svc, secrets["password"], "ALTER SYSTEM SET primary_conninfo = %s", (info,))
    query(address, svc, secrets["password"], "SELECT pg_reload_conf()")


def check_traversable(directory: Path) -> None:
    """PostgreSQL runs as ``postgres``: every directory above the lab must let it through."""
    if os.geteuid() != 0:
        return
    for parent in directory.parents:
        if not parent.stat().st_mode & 0o001:
            raise ChefLabError(
                f"{parent} is not searchable by others (mode {parent.stat().st_mode & 0o777:o}): "
                f"the postgres user cannot reach {directory}; choose another --dir"
            )
