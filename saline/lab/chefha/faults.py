"""``saline lab fault KIND NODE``: break one thing of the Chef HA lab on purpose, for real.

Each fault acts on the real service or file (PostgreSQL through SQL and ``pg_ctl``, etcd
and the Elasticsearch stand-in through their processes, the formula's files on disk) and
returns a sentence saying what it did. PostgreSQL faults refuse the leader (saline's rules
never touch it, and the lab's faults are what the rules are meant to heal), but for
``pg-leader-kill``, which emulates leaderl's failover after it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saline.lab.chefha import layout, pg, procs, server_ctl
from saline.lab.chefha.state import ChefLabError, locked, node

Fault = Callable[[dict[str, Any], dict[str, Any]], str]


def _follower(data: dict[str, Any], me: dict[str, Any]) -> dict[str, Any]:
    if me["role"] != "backend":
        raise ChefLabError(f"{me['name']} is a {me['role']}: PostgreSQL faults need a backend")
    if me["name"] == data["leader"]:
        raise ChefLabError(f"{me['name']} is the PostgreSQL leader: lab faults break followers")
    svc: dict[str, Any] = me["services"]["postgresql"]
    return svc


def _leader(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    leader = data["nodes"][data["leader"]]
    return leader, leader["services"]["postgresql"]


def pg_stop(data: dict[str, Any], me: dict[str, Any]) -> str:
    pg.stop(_follower(data, me), "immediate")
    return f"stopped PostgreSQL on {me['name']} (pg_ctl stop -m immediate)"


def pg_pause_replay(data: dict[str, Any], me: dict[str, Any]) -> str:
    pg.query(me["address"], _follower(data, me), data["secrets"]["password"],
             "SELECT pg_wal_replay_pause()")  # fmt: skip
    return f"paused WAL replay on {me['name']} (pg_wal_replay_pause())"


def pg_break_upstream(data: dict[str, Any], me: dict[str, Any]) -> str:
    svc = _follower(data, me)
    leader, _ = _leader(data)
    # the leader's address with a port nothing listens on: the WAL receiver cannot connect
    pg.follow(svc, me["address"], me["name"], (leader["address"], 1), data["secrets"])
    return f"pointed {me['name']}'s primary_conninfo at {leader['address']}:1 (nothing there)"


def pg_stall_sender(data: dict[str, Any], me: dict[str, Any]) -> str:
    """The leader's WAL sender for this follower stopped (SIGSTOP): the follower's receiver
    still says streaming and lags nothing behind what it received, yet receives nothing;
    only the leader's view sees it (its replies stop). A detached helper continues the
    sender after :data:`STALL_SECONDS` (a stopped process never exits), as does stopping
    the leader's PostgreSQL."""
    _follower(data, me)
    leader, lsvc = _leader(data)
    rows = pg.query(
        leader["address"], lsvc, data["secrets"]["password"],
        "SELECT pid FROM pg_stat_replication WHERE application_name = %s", (me["name"],),
    )  # fmt: skip
    if not rows:
        raise ChefLabError(f"{leader['name']} has no WAL sender for {me['name']}: nothing to stall")
    pid = int(rows[0][0])
    os.kill(pid, signal.SIGSTOP)
    subprocess.Popen(  # argv only, detached: it outlives this command
        [sys.executable, "-c", _CONTINUE, str(pid), str(STALL_SECONDS)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return (
        f"stopped {leader['name']}'s WAL sender for {me['name']} (pid {pid}, SIGSTOP; "
        f"continued in {STALL_SECONDS} s): {me['name']} believes it streams, receives nothing"
    )


#: seconds a stalled WAL sender stays stopped
STALL_SECONDS = 60
_CONTINUE = (
    "import os, signal, sys, time\n"
    "time.sleep(float(sys.argv[2]))\n"
    "try:\n    os.kill(int(sys.argv[1]), signal.SIGCONT)\nexcept ProcessLookupError:\n    pass\n"
)


def pg_promote(data: dict[str, Any], me: dict[str, Any]) -> str:
    """A follower promoted by hand (or by a confused tool): two PostgreSQL nodes lead, while
    leaderl (the lab's record) still designates the old leader."""
    svc = _follower(data, me)
    pg.run("pg_ctl", "promote", "-w", "-D", svc["data_dir"])
    return (
        f"promoted {me['name']}'s PostgreSQL (pg_ctl promote): it leads beside "
        f"{data['leader']}, the leader leaderl designates"
    )


def _lsn(text: str | None) -> int:
    high, _, low = (text or "0/0").partition("/")
    return (int(high, 16) << 32) | int(low or "0", 16)


def pg_leader_kill(data: dict[str, Any], me: dict[str, Any]) -> str:
    """The leader's PostgreSQL killed, and leaderl's failover emulated: the follower that
    replayed most is promoted and designated; the other is left pointing at the dead leader
    (chef-backend did not re-point it: saline's follower ladder must)."""
    if me["name"] != data["leader"]:
        raise ChefLabError(f"{me['name']} does not lead: pg-leader-kill needs {data['leader']}")
    password = data["secrets"]["password"]
    pg.stop(me["services"]["postgresql"], "immediate")
    replayed = {}
    for name in sorted(data["nodes"]):
        other = data["nodes"][name]
        if other["role"] != "backend" or name == me["name"]:
            continue
        svc = other["services"]["postgresql"]
        (lsn,) = pg.query(other["address"], svc, password, "SELECT pg_last_wal_replay_lsn()")[0]
        replayed[name] = _lsn(lsn)
    chosen = max(sorted(replayed), key=replayed.__getitem__)
    new = data["nodes"][chosen]["services"]["postgresql"]
    pg.run("pg_ctl", "promote", "-w", "-D", new["data_dir"])
    new["role"], data["leader"] = "leader", chosen
    left = [n for n in sorted(replayed) if n != chosen]
    return (
        f"killed the leader {me['name']}'s PostgreSQL; leaderl's failover promoted {chosen}; "
        f"{', '.join(left)} still point(s) at {me['name']}"
    )


def pg_wal_gone(data: dict[str, Any], me: dict[str, Any]) -> str:
    """Stop the follower, churn WAL on the leader until the segment it needs is recycled."""
    svc = _follower(data, me)
    password = data["secrets"]["password"]
    leader, lsvc = _leader(data)
    # the follower replays what it already received from its own pg_wal, then asks the
    # leader for the segment holding its last received position: that one must be gone
    (received,) = pg.query(
        me["address"], svc, password,
        "SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())",
    )[0]  # fmt: skip
    pg.stop(svc, "immediate")
    # + 1: at a segment boundary pg_walfile_name names the segment before it
    (needed,) = pg.query(leader["address"], lsvc, password,
                         "SELECT pg_walfile_name(%s::pg_lsn + 1)", (received,))[0]  # fmt: skip
    pg.query(leader["address"], lsvc, password,
             "CREATE TABLE IF NOT EXISTS saline_lab_churn (n int)")  # fmt: skip
    for rounds in range(1, 41):
        pg.query(leader["address"], lsvc, password,
                 "INSERT INTO saline_lab_churn SELECT 1; SELECT pg_switch_wal()")  # fmt: skip
        pg.query(leader["address"], lsvc, password, "CHECKPOINT")
        segments = pg.query(
            leader["address"], lsvc, password,
            "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
        )  # fmt: skip
        oldest = segments[0][0]
        if oldest is not None and oldest[8:] > needed[8:]:
            log = Path(svc["log"])
            seen = log.stat().st_size if log.exists() else 0
            pg.start(svc)
            _wait_in_log(log, seen, "has already been removed")
            return (
                f"{me['name']} needs WAL segment {needed}; after {rounds} switch(es) the "
                f"leader's oldest is {oldest}: only a re-clone can bring it back"
            )
    pg.start(svc)
    raise ChefLabError(f"the leader still keeps segment {needed} after 40 WAL switches")


def _wait_in_log(log: Path, offset: int, text: str, timeout: float = 15.0) -> None:
    """Until ``text`` appears in ``log`` after ``offset``: the fault has really taken hold."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("rb") as f:
            f.seek(offset)
            if text.encode() in f.read():
                return
        time.sleep(0.1)
    raise ChefLabError(f"no {text!r} in {log} after {timeout:g}s: the fault did not take hold")


def etcd_kill(data: dict[str, Any], me: dict[str, Any]) -> str:
    svc = _backend(me)["etcd"]
    if not procs.kill(svc):
        raise ChefLabError(f"etcd on {me['name']} is not running")
    return f"killed etcd on {me['name']} (SIGKILL, pid {svc['pid']})"


def _backend(me: dict[str, Any]) -> dict[str, Any]:
    if me["role"] != "backend":
        raise ChefLabError(f"{me['name']} is a {me['role']}: this fault needs a backend")
    services: dict[str, Any] = me["services"]
    return services


def _es_state(me: dict[str, Any], state: dict[str, Any]) -> None:
    path = Path(_backend(me)["elasticsearch"]["state_file"])
    # "at" makes every write a change the stand-in rereads, even for the same health twice
    path.write_text(json.dumps({**state, "at": time.time()}))


def es_yellow(data: dict[str, Any], me: dict[str, Any]) -> str:
    _es_state(me, {"health": "yellow"})
    return f"Elasticsearch on {me['name']}: replica shards failed allocation (yellow)"


def es_red(data: dict[str, Any], me: dict[str, Any]) -> str:
    _es_state(me, {"health": "red"})
    return f"Elasticsearch on {me['name']}: a primary shard failed allocation (red)"


def es_stop(data: dict[str, Any], me: dict[str, Any]) -> str:
    if not procs.kill(_backend(me)["elasticsearch"]):
        raise ChefLabError(f"Elasticsearch on {me['name']} is not running")
    return f"killed the Elasticsearch service on {me['name']}"


def _frontend_root(me: dict[str, Any]) -> Path:
    if me["role"] != "frontend":
        raise ChefLabError(f"{me['name']} is a {me['role']}: this fault needs a frontend")
    return Path(me["root"])


def migration_drift(data: dict[str, Any], me: dict[str, Any]) -> str:
    path = _frontend_root(me) / layout.MIGRATION_LEVEL
    level = json.loads(path.read_text())
    level["minor"] -= 1
    path.write_text(json.dumps(level) + "\n")
    return f"{me['name']}'s migration-level set back to {level['major']}.{level['minor']}"


def migration_missing(data: dict[str, Any], me: dict[str, Any]) -> str:
    (_frontend_root(me) / layout.MIGRATION_LEVEL).unlink()
    return f"removed {me['name']}'s migration-level file"


def fe_service_down(data: dict[str, Any], me: dict[str, Any]) -> str:
    """opscode-erchef (the Chef API) down on a frontend: ``chef-server-ctl status`` says so."""
    server_ctl.set_service(_frontend_root(me), "opscode-erchef", "down")
    return f"opscode-erchef is down on {me['name']} (chef-server-ctl status: down, normally up)"


def md5_auth(data: dict[str, Any], me: dict[str, Any]) -> str:
    _backend(me)
    path = Path(me["root"]) / layout.BACKEND_RB
    cidrs = [*layout.cidr_list(data["subnet"]), "10.99.0.0/16"]
    path.write_text(layout.backend_rb(me["address"], cidrs))
    return f"{me['name']}'s chef-backend.rb: md5_auth_cidr_addresses now {cidrs}"


def secrets_mode(data: dict[str, Any], me: dict[str, Any]) -> str:
    _backend(me)
    path = Path(me["root"]) / "etc/chef-backend/secrets.json"
    path.chmod(0o644)
    return f"{path} is now world-readable (0644, want 0640)"


def clock_drift(data: dict[str, Any], me: dict[str, Any]) -> str:
    """The node's time source now answers 3 s ahead: its clock looks 3 s behind."""
    path = Path(_backend(me)["ntp"]["skew_file"])
    path.write_text("3.0\n")
    return f"{me['name']}'s clock is now 3.0 s off its peers (the reference allows 1.5 s)"


FAULTS: dict[str, Fault] = {
    "pg-stop": pg_stop,
    "pg-pause-replay": pg_pause_replay,
    "pg-break-upstream": pg_break_upstream,
    "pg-wal-gone": pg_wal_gone,
    "pg-stall-sender": pg_stall_sender,
    "pg-promote": pg_promote,
    "pg-leader-kill": pg_leader_kill,
    "etcd-kill": etcd_kill,
    "es-yellow": es_yellow,
    "es-red": es_red,
    "es-stop": es_stop,
    "migration-drift": migration_drift,
    "migration-missing": migration_missing,
    "fe-service-down": fe_service_down,
    "md5-auth": md5_auth,
    "secrets-mode": secrets_mode,
    "clock-drift": clock_drift,
}


def inject(directory: Path, kind: str, name: str) -> str:
    """Inject fault ``kind`` on node ``name``; :returns: what was done."""
    fault = FAULTS.get(kind)
    if fault is None:
        raise ChefLabError(f"unknown fault {kind!r} (one of: {', '.join(FAULTS)})")
    with locked(directory) as data:
        return fault(data, node(data, name))
