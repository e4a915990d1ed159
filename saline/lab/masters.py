"""``saline lab up --masters N``: several masters sharing one store, one key and one leader.

Started for real, in this order: three etcd members for the leader lease
(:mod:`saline.lab.etcd`), a PostgreSQL server for the store (:mod:`saline.lab.store_pg`,
its DSN in ``DIR/store.dsn``, 0600), one etcd proxy per master (:mod:`saline.lab.tcp_proxy`,
so one master can be cut off), the masters ``m1``.. and the minions, which list every
master. Every process is recorded in ``DIR/lab.json`` like a one-master lab's, and
``lab down`` stops them all, then PostgreSQL. Layout::

    DIR/master.yaml            a copy of m1's config: the CLI's default
    DIR/masters/mN/            master.yaml, pki/ (the shared keypair, every minion
                               accepted), data/, sock/, etcd-proxy.json
    DIR/store-pg/              data/, sock/, log/ of the store's PostgreSQL
    DIR/store.dsn              postgresql://saline:PASSWORD@127.0.0.1:PORT/saline (0600)
    DIR/leader-etcd/eN/        data/ and etcd.log of each member
    DIR/minions/ID/  DIR/logs/ as in a one-master lab
"""

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saline.client import MasterClient
from saline.errors import ClientError
from saline.lab import etcd, store_pg
from saline.lab.chefha import pg, procs
from saline.lab.lab import Lab, LabError, MasterSpec
from saline.lab.processes import alive, reap, saline_argv, spawn

#: the lease of the lab's leader: a dead leader is replaced within a few seconds
LEADER_TTL = 3


def master_names(count: int) -> list[str]:
    return [f"m{i}" for i in range(1, count + 1)]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports, free right now (all held open while picked)."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]


def master_settings(
    name: str, dsn_file: Path, endpoints: list[str], ttl: int = LEADER_TTL
) -> dict[str, Any]:
    """What a master of the lab adds to the one-master lab's config."""
    return {
        "master_name": name,
        "store": str(dsn_file),
        "etcd_endpoints": endpoints,
        "leader_ttl": ttl,
    }


def process_state(pid: int) -> str | None:
    """The state letter of ``/proc/PID/stat`` (R, S, T...), None when there is no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _check_programs() -> None:
    """Fail before starting anything when etcd or PostgreSQL is not installed."""
    if not Path(procs.ETCD).exists():
        raise LabError(f"etcd not found ({procs.ETCD}): install the Debian package etcd-server")
    if not (pg.PG_BIN / "initdb").exists():
        raise LabError(
            f"PostgreSQL not found in {pg.PG_BIN} (install postgresql-15, or set SALINE_PG_BIN)"
        )


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


class MastersLab:
    """The lab of several masters in ``directory``: up, status, down, faults."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lab = Lab(directory)

    @property
    def state(self) -> dict[str, Any]:
        return self.lab.state

    # -- up ----------------------------------------------------------------------------------

    def up(
        self,
        minions: int,
        masters: int = 3,
        timeout: float = 60.0,
        per_minion: Callable[[str], dict[str, Any]] | None = None,
        extra_master: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Start etcd, PostgreSQL, proxies, masters and minions; wait until every master sees
        every minion and (when masters report leadership) one of them leads.
        ``per_minion(id)`` adds to one minion's config, ``extra_master`` to every master's
        (the Chef HA lab's formula).

        :returns: seconds per phase, and ``total``.
        """
        if self.lab.state_file.exists():
            self.lab.load()
            if any(self.lab.running().values()):
                raise LabError(f"a lab is already running in {self.directory}; `lab down` first")
            self._stop_store()
        _check_programs()
        started = time.monotonic()
        timings: dict[str, float] = {}
        names = master_names(masters)
        d = self.directory
        ports = free_ports(1 + 2 * len(etcd.MEMBERS) + masters * (1 + len(etcd.MEMBERS)))
        pg_port, ports = ports[0], ports[1:]
        etcd_ports, ports = ports[: 2 * len(etcd.MEMBERS)], ports[2 * len(etcd.MEMBERS) :]
        members = etcd.members(d, etcd_ports)
        store = store_pg.service(d, pg_port)
        specs: list[MasterSpec] = []
        proxies: dict[str, dict[str, Any]] = {}
        for name in names:
            port, ports = ports[0], ports[1:]
            listen, ports = ports[: len(members)], ports[len(members) :]
            proxies[name] = etcd.proxy(d, name, listen, members)
            extra = {
                **(extra_master or {}),
                **master_settings(name, Path(store["dsn_file"]), proxies[name]["endpoints"]),
            }
            specs.append(
                MasterSpec(
                    name, d / "masters" / name, d / "masters" / name / "master.yaml", port, extra
                )
            )
        self.lab.write_layout(minions, specs[0].port, None, per_minion, masters=specs)
        d.chmod(0o711)  # the postgres user must reach DIR/store-pg; listings stay private
        pg.check_traversable(d)
        self.state["services"] = {
            **{f"leader-etcd-{n}": svc for n, svc in members.items()},
            **{f"etcd-proxy-{n}": svc for n, svc in proxies.items()},
        }
        self.state["store"] = store
        self.lab.save()
        try:
            etcd.start_members(d, members)
            self.lab.save()
            etcd_started = time.monotonic()
            store_pg.start(store)  # initdb while etcd starts
            self.lab.save()
            timings["postgresql"] = time.monotonic() - etcd_started
            etcd.wait_healthy(members, timeout=30)
            timings["etcd"] = time.monotonic() - etcd_started
            mark = time.monotonic()
            for svc in proxies.values():
                procs.start(svc)
            self.lab.save()
            for svc in proxies.values():
                etcd.wait_proxy(svc, cut=False)
            timings["proxies"] = time.monotonic() - mark
            mark = time.monotonic()
            for name in names:
                self.start_master(name)
            self.lab.launch_minions()
            self.wait_ready(timeout)
            timings["masters and minions"] = time.monotonic() - mark
        except BaseException:
            self.lab.save()  # every pid started so far, for down
            self.down()
            raise
        timings["total"] = time.monotonic() - started
        return timings

    def start_master(self, name: str) -> int:
        """Start (or start again, after a kill) master ``name``; recorded for ``down``."""
        record = self._master(name)
        if "pid" in record and alive(record["pid"], record["marker"]):
            raise LabError(f"master {name} is running (pid {record['pid']})")
        log = self.directory / "logs" / f"master-{name}.out"
        record["pid"] = spawn(saline_argv(Path(record["config"]), "master"), log)
        self.lab.save()
        return int(record["pid"])

    def wait_ready(self, timeout: float) -> None:
        """Every running master answers and sees every minion; when the masters report
        leadership, exactly one leads."""
        deadline = time.monotonic() + timeout
        wanted = set(self.state["minions"])
        why = "no master answered"
        while True:
            dead = sorted(name for name, up in self.lab.running().items() if not up)
            if dead:
                raise LabError(
                    f"lab process(es) exited: {', '.join(dead)}; see {self.directory}/logs/"
                )
            replies = {name: self.ask(name) for name in self.state["masters"]}
            silent = sorted(name for name, reply in replies.items() if reply is None)
            missing = {
                name: sorted(wanted - set(reply.get("online", [])))
                for name, reply in replies.items()
                if reply is not None
            }
            leaders = [n for n, r in replies.items() if r is not None and _leading(r)]
            reported = any(r is not None and "leadership" in r for r in replies.values())
            if silent:
                why = f"no answer from {', '.join(silent)}"
            elif any(missing.values()):
                why = "; ".join(f"{n} misses {', '.join(m)}" for n, m in missing.items() if m)
            elif reported and len(leaders) != 1:
                why = f"{len(leaders)} leaders ({', '.join(leaders) or 'none'})"
            else:
                return
            if time.monotonic() > deadline:
                raise LabError(f"lab not ready after {timeout:g}s: {why}")
            time.sleep(0.05)

    # -- asking the masters ------------------------------------------------------------------

    def _master(self, name: str) -> dict[str, Any]:
        masters: dict[str, dict[str, Any]] = self.state.get("masters", {})
        if name not in masters:
            raise LabError(f"no master {name!r} in this lab (masters: {', '.join(masters)})")
        return masters[name]

    def client(self, name: str, timeout: float = 2.0) -> MasterClient:
        return MasterClient(Path(self._master(name)["sock_dir"]) / "client.sock", timeout=timeout)

    def ask(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None:
        """Master ``name``'s reply to the client API's ``status``; None when it does not
        answer (stopped, paused, not started yet)."""
        record = self._master(name)
        if "pid" not in record or not alive(record["pid"], record["marker"]):
            return None
        if process_state(record["pid"]) == "T":
            return None  # paused: it would not answer before the timeout
        try:
            with self.client(name, timeout) as master:
                reply: dict[str, Any] = master.request("status")
        except ClientError:
            return None
        return reply

    # -- down and status ---------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop masters and minions, then etcd and the proxies, then PostgreSQL."""
        self.lab.load()
        for record in self.state.get("masters", {}).values():
            if "pid" in record and alive(record["pid"], record["marker"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record["pid"], signal.SIGCONT)  # a paused master cannot stop
        stopped = self.lab.down()
        self._stop_store()
        reap()
        return stopped

    def _stop_store(self) -> None:
        store = self.state.get("store")
        if store is not None:
            store_pg.stop(store)

    def status(self) -> dict[str, Any]:
        self.lab.load()
        running = self.lab.running()
        replies = {name: self.ask(name) for name in self.state["masters"]}
        online: set[str] = set()
        for reply in replies.values():
            online.update((reply or {}).get("online", []))
        masters = []
        for name, record in self.state["masters"].items():
            reply = replies[name]
            proxy = self.state["services"][f"etcd-proxy-{name}"]
            pid = record.get("pid")
            masters.append(
                {
                    "name": name,
                    "pid": pid,
                    "running": running.get(name, False),
                    "paused": pid is not None
                    and running.get(name, False)
                    and process_state(pid) == "T",
                    "leader": reply is not None and _leading(reply),
                    "config": record["config"],
                    "port": record["port"],
                    "metrics": record.get("metrics"),
                    "etcd_proxy": {
                        "pid": proxy.get("pid"),
                        "running": running.get(f"etcd-proxy-{name}", False),
                        "cut": proxy.get("cut", False),
                        "endpoints": proxy["endpoints"],
                    },
                }
            )
        first = masters[0]
        store = self.state["store"]
        store_pid = store_pg.running_pid(store)
        return {
            "dir": str(self.directory),
            "config": str(self.lab.master_config),
            "port": self.state.get("port"),
            "metrics": self.state.get("metrics"),
            # the master DIR/master.yaml names: the CLI's default
            "master": {"pid": first["pid"], "running": first["running"]},
            "masters": masters,
            "minions": {
                m: {
                    "pid": info.get("pid"),
                    "running": running.get(m, False),
                    "online": m in online,
                    "role": "backend" if m.startswith("be") else "frontend",
                }
                for m, info in self.state.get("minions", {}).items()
            },
            "store": {
                "dsn_file": store["dsn_file"],
                "port": store["port"],
                "data_dir": store["data_dir"],
                "pid": store_pid,
                "running": store_pid is not None,
            },
            "leader_etcd": {
                name: {
                    "client_url": svc["client_url"],
                    "pid": svc.get("pid"),
                    "running": running.get(f"leader-etcd-{name}", False),
                    "data_dir": svc["data_dir"],
                }
                for name, svc in (
                    (n, self.state["services"][f"leader-etcd-{n}"]) for n in etcd.MEMBERS
                )
            },
        }

    # -- faults ------------------------------------------------------------------------------

    def fault(self, kind: str, name: str) -> str:
        """Inject fault ``kind`` (one of :data:`FAULTS`) on master ``name``; what it did."""
        if kind not in FAULTS:
            raise LabError(f"unknown fault {kind!r} (faults: {', '.join(FAULTS)})")
        self.lab.load()
        record = self._master(name)
        said = FAULTS[kind](self, name, record)
        self.lab.save()
        return said

    def _running_pid(self, name: str, record: dict[str, Any]) -> int:
        pid = record.get("pid")
        if not isinstance(pid, int) or not alive(pid, record["marker"]):
            raise LabError(f"master {name} is not running")
        return pid

    def _kill(self, name: str, record: dict[str, Any]) -> str:
        pid = self._running_pid(name, record)
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not alive(pid, record["marker"]), 10, f"master {name} (pid {pid}) to die")
        return f"killed master {name} (SIGKILL to pid {pid})"

    def _pause(self, name: str, record: dict[str, Any]) -> str:
        pid = self._running_pid(name, record)
        os.kill(pid, signal.SIGSTOP)
        _wait(lambda: process_state(pid) == "T", 10, f"master {name} to stop")
        return f"paused master {name} (SIGSTOP to pid {pid})"

    def _resume(self, name: str, record: dict[str, Any]) -> str:
        pid = self._running_pid(name, record)
        os.kill(pid, signal.SIGCONT)
        _wait(lambda: process_state(pid) != "T", 10, f"master {name} to continue")
        return f"resumed master {name} (SIGCONT to pid {pid})"

    def _start(self, name: str, record: dict[str, Any]) -> str:
        pid = self.start_master(name)
        return f"started master {name} again (pid {pid})"

    def _switch_proxy(self, name: str, cut: bool) -> str:
        svc = self.state["services"][f"etcd-proxy-{name}"]
        if not procs.running(svc):
            raise LabError(f"the etcd proxy of {name} is not running")
        os.kill(svc["pid"], signal.SIGUSR1 if cut else signal.SIGUSR2)
        etcd.wait_proxy(svc, cut=cut)
        svc["cut"] = cut
        ends = ", ".join(svc["endpoints"])
        if cut:
            return f"cut master {name} off from the leader etcd (its proxy {ends} refuses)"
        return f"reconnected master {name} to the leader etcd (its proxy {ends} forwards)"

    def _partition(self, name: str, record: dict[str, Any]) -> str:
        return self._switch_proxy(name, cut=True)

    def _heal(self, name: str, record: dict[str, Any]) -> str:
        return self._switch_proxy(name, cut=False)


def _leading(reply: dict[str, Any]) -> bool:
    """Does this ``status`` reply say its master leads? (No leadership field: no.)"""
    leadership = reply.get("leadership") or {}
    return bool(leadership.get("leading", False))


Fault = Callable[[MastersLab, str, dict[str, Any]], str]

#: ``saline lab fault KIND MASTER`` on a lab of several masters
FAULTS: dict[str, Fault] = {
    "master-kill": MastersLab._kill,
    "master-pause": MastersLab._pause,
    "master-resume": MastersLab._resume,
    "master-start": MastersLab._start,
    "etcd-partition": MastersLab._partition,
    "etcd-heal": MastersLab._heal,
}


class LeaderKiller:
    """Kills the leading master of a lab of several masters, and starts it again."""

    def __init__(self, several: MastersLab) -> None:
        self.several = several
        self.killed: str | None = None

    def leader(self) -> str:
        found = [m["name"] for m in self.several.status()["masters"] if m["leader"]]
        if len(found) != 1:
            raise LabError(f"expected one leading master, found {found or 'none'}")
        return str(found[0])

    def standby(self) -> str:
        leader = self.leader()
        names: list[str] = list(self.several.state["masters"])
        return next(name for name in names if name != leader)

    def kill(self) -> str:
        self.killed = self.leader()
        return self.several.fault("master-kill", self.killed)

    def restart(self) -> None:
        if self.killed is not None:
            self.several.fault("master-start", self.killed)
            self.several.wait_ready(60)
            self.killed = None
