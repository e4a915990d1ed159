"""``saline lab``: lay out configs and keys in DIR, start a master and minions, stop them.

Everything the lab starts is recorded in ``DIR/lab.json`` (pid and the config path that
appears on its command line); ``down`` stops exactly those processes and nothing else.
"""

import hashlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saline.client import MasterClient
from saline.errors import ClientError, SalineError
from saline.keys import (
    KeyRing,
    KeyState,
    ensure_dir,
    fingerprint,
    load_or_create_keypair,
    write_keypair,
)
from saline.lab.processes import alive, saline_argv, spawn, stop

DEFAULT_LAB_DIR = Path(tempfile.gettempdir()) / "saline-lab"
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; keep a margin


class LabError(SalineError):
    """The lab could not be brought up, found, or brought down."""


def lab_ids(count: int) -> list[str]:
    """Readable, stable ids: the first half (rounded up) backends, the rest frontends."""
    backends = (count + 1) // 2
    return [f"be{i}" for i in range(1, backends + 1)] + [
        f"fe{i}" for i in range(1, count - backends + 1)
    ]


def _accept(ring: KeyRing, minion_id: str, public: str) -> None:
    """Make ``public`` the one key of ``minion_id`` in ``ring``, accepted."""
    existing = ring.get(minion_id, KeyState.ACCEPTED)
    if existing is None or existing.public != public:
        for state in KeyState:
            if ring.get(minion_id, state) is not None:
                ring.delete(minion_id)
        ring.add(minion_id, public, KeyState.ACCEPTED)


def role_of(minion_id: str) -> str:
    return "backend" if minion_id.startswith("be") else "frontend"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _sock_dir(master_dir: Path) -> Path:
    """``MASTER_DIR/sock``, or a short path under $TMPDIR when that is too long for a socket."""
    preferred = master_dir / "sock"
    if len(str(preferred / "client.sock")) <= _SUN_PATH_MAX:
        return preferred
    digest = hashlib.sha256(str(master_dir.parent).encode()).hexdigest()[:12]
    suffix = "" if master_dir.name == "master" else f"-{master_dir.name}"
    return Path(tempfile.gettempdir()) / f"saline-lab-{digest}{suffix}"


@dataclass(frozen=True)
class MasterSpec:
    """One master of a lab: where it lives and what its config adds to the defaults."""

    #: ``master`` for the single master of a plain lab; ``m1``.. when there are several
    name: str
    #: its pki, data and (when short enough) socket dirs live under this one
    home: Path
    #: its master.yaml
    config: Path
    #: TCP port of its minion socket
    port: int
    #: settings over the lab's defaults (store, etcd, name...)
    extra: dict[str, Any] = field(default_factory=dict)


def is_masters_lab(directory: Path) -> bool:
    """Does ``directory`` hold a lab of several masters (up or down)?"""
    try:
        return "masters" in json.loads((directory / "lab.json").read_text())
    except (OSError, ValueError):
        return False


@dataclass
class Lab:
    directory: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def master_config(self) -> Path:
        return self.directory / "master.yaml"

    @property
    def state_file(self) -> Path:
        return self.directory / "lab.json"

    def load(self) -> "Lab":
        try:
            self.state = json.loads(self.state_file.read_text())
        except FileNotFoundError as e:
            raise LabError(f"no lab in {self.directory} (run `saline lab up --dir ...`)") from e
        return self

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    # -- processes ---------------------------------------------------------------------

    def processes(self) -> dict[str, dict[str, Any]]:
        """name -> {pid, marker}; the marker is a path on its command line (a config).

        The master (or masters ``m1``.. of a lab of several), the minions, then the
        services (etcd members, proxies) a lab of several masters starts.
        """
        procs: dict[str, dict[str, Any]] = {}
        if "master" in self.state:
            procs["master"] = self.state["master"]
        procs.update((n, m) for n, m in self.state.get("masters", {}).items() if "pid" in m)
        procs.update(self.state.get("minions", {}))
        procs.update(self.services())
        return procs

    def services(self) -> dict[str, dict[str, Any]]:
        """The lab's own services that are not saline (etcd members, proxies): name -> record."""
        return {n: s for n, s in self.state.get("services", {}).items() if "pid" in s}

    def running(self) -> dict[str, bool]:
        return {name: alive(p["pid"], p["marker"]) for name, p in self.processes().items()}

    # -- layout ------------------------------------------------------------------------

    def write_layout(
        self,
        count: int,
        port: int,
        extra_minion: dict[str, Any] | None,
        per_minion: Callable[[str], dict[str, Any]] | None = None,
        extra_master: dict[str, Any] | None = None,
        masters: list[MasterSpec] | None = None,
    ) -> None:
        """Write master and minion configs and keys; ``per_minion(id)`` adds to one minion's
        config and ``extra_master`` to the master's (both override the defaults).

        ``masters``: several masters sharing one keypair (made once, copied into each pki
        dir), each with every minion's key accepted; the minions list them all, and
        ``DIR/master.yaml`` is a copy of the first one's config. Without it: the one
        master in ``DIR/master`` (``port``, ``extra_master``).
        """
        d = ensure_dir(self.directory)
        for sub in ("states", "pillar", "reactors", "runbooks", "logs"):
            (d / sub).mkdir(exist_ok=True)  # files an operator put there are kept
        specs = masters or [
            MasterSpec("master", d / "master", self.master_config, port, extra_master or {})
        ]
        first_pki = ensure_dir(specs[0].home / "pki")
        master_keys = load_or_create_keypair(first_pki, "master")
        rings = [KeyRing(first_pki)]
        for spec in specs[1:]:
            pki = ensure_dir(spec.home / "pki")
            write_keypair(pki, "master", master_keys)
            rings.append(KeyRing(pki))
        if masters:  # with a shared store a master may never write its data_dir itself
            for spec in specs:
                ensure_dir(spec.home / "data")
        master_cfgs = [
            self._master_settings(spec, count, ring)
            for spec, ring in zip(specs, rings, strict=True)
        ]
        for spec, settings in zip(specs, master_cfgs, strict=True):
            spec.config.parent.mkdir(parents=True, exist_ok=True)
            spec.config.write_text(yaml.safe_dump(settings, sort_keys=False))
        if masters:
            self.master_config.write_text(specs[0].config.read_text())
        minions: dict[str, Any] = {}
        for minion_id in lab_ids(count):
            mdir = ensure_dir(d / "minions" / minion_id)
            mpki = ensure_dir(mdir / "pki")
            keys = load_or_create_keypair(mpki, "minion")
            for ring in rings:
                _accept(ring, minion_id, keys.public)
            cfg: dict[str, Any] = {
                "id": minion_id,
                "master": "127.0.0.1",
                "master_port": port,
                "master_pub": master_keys.public,
                "master_finger": fingerprint(master_keys.public),
                "pki_dir": str(mpki),
                "cachedir": str(mdir / "cache"),
                "log_file": str(d / "logs" / f"{minion_id}.log"),
                "heartbeat_interval": 1.0,
                "acceptance_wait": 1.0,
                "return_retry": 2.0,
                "service_provider": "supervisor",
                "services": {"demo": {"argv": ["sleep", "infinity"]}},
                "grains": {"role": role_of(minion_id), "lab": True},
            }
            if masters:
                cfg["master"] = [f"127.0.0.1:{spec.port}" for spec in specs]
            cfg.update(extra_minion or {})
            cfg.update(per_minion(minion_id) if per_minion else {})
            path = mdir / "minion.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            minions[minion_id] = {"config": str(path)}
        self.state = {"dir": str(d), "port": specs[0].port, "minions": minions}
        if master_cfgs[0]["metrics_listen"] is not None:
            self.state["metrics"] = f"http://{master_cfgs[0]['metrics_listen']}/metrics"
        if masters:
            self.state["masters"] = {
                spec.name: {
                    "config": str(spec.config),
                    "marker": str(spec.config),
                    "port": spec.port,
                    "sock_dir": settings["sock_dir"],
                    "metrics": f"http://{settings['metrics_listen']}/metrics",
                }
                for spec, settings in zip(specs, master_cfgs, strict=True)
            }

    def _master_settings(self, spec: MasterSpec, count: int, ring: KeyRing) -> dict[str, Any]:
        d = self.directory
        log_name = "master.log" if spec.name == "master" else f"master-{spec.name}.log"
        return {
            "interface": "127.0.0.1",
            "port": spec.port,
            "pki_dir": str(ring.pki_dir),
            "data_dir": str(spec.home / "data"),
            "sock_dir": str(_sock_dir(spec.home)),
            "log_file": str(d / "logs" / log_name),
            "presence_timeout": 3.0,
            "job_timeout": 10.0,
            "file_roots": [str(d / "states")],
            "pillar_roots": [str(d / "pillar")],
            "reactor_dirs": [str(d / "reactors")],
            "runbook_roots": [str(d / "runbooks")],
            # what the master itself knows of each node (pillar trusts only this)
            "minion_grains": {m: {"role": role_of(m)} for m in lab_ids(count)},
            # Prometheus metrics on a free loopback port, to look at at once
            "metrics_listen": f"127.0.0.1:{free_port()}",
            **spec.extra,
        }

    # -- life cycle --------------------------------------------------------------------

    def up(
        self,
        count: int,
        timeout: float = 30.0,
        extra: dict[str, Any] | None = None,
        per_minion: Callable[[str], dict[str, Any]] | None = None,
        extra_master: dict[str, Any] | None = None,
    ) -> float:
        """Lay out, start the master and ``count`` minions, wait until all are online.

        :returns: seconds from the first spawn until every minion answered presence.
        """
        if self.state_file.exists():
            self.load()
            if any(self.running().values()):
                raise LabError(f"a lab is already running in {self.directory}; `lab down` first")
        self.write_layout(count, free_port(), extra, per_minion, extra_master)
        started = time.monotonic()
        self.start_master()
        self.launch_minions()
        self.wait_online(list(self.state["minions"]), timeout)
        return time.monotonic() - started

    def launch_minions(self) -> None:
        """Start every minion of the layout (forked by one launcher); recorded for ``down``."""
        logs = self.directory / "logs"
        argv = [sys.executable, "-m", "saline.lab.launcher"]
        for minion_id, info in self.state["minions"].items():
            argv += [info["config"], str(logs / f"{minion_id}.out")]
        launched = subprocess.run(argv, capture_output=True, text=True, check=False)
        if launched.returncode != 0:
            raise LabError(f"could not launch the minions: {launched.stderr.strip()}")
        pids = json.loads(launched.stdout)
        for info in self.state["minions"].values():
            # the forked minions carry the launcher's command line, which names every config
            info["pid"] = pids[info["config"]]
            info["marker"] = info["config"]
        self.save()

    def start_master(self) -> int:
        """Start (or restart, after it died) the lab's master; recorded for ``down``."""
        log = self.directory / "logs" / "master.out"
        pid = spawn(saline_argv(self.master_config, "master"), log)
        self.state["master"] = {"pid": pid, "marker": str(self.master_config)}
        self.save()
        return pid

    def client(self, timeout: float = 5.0) -> MasterClient:
        config = yaml.safe_load(self.master_config.read_text())
        return MasterClient(Path(config["sock_dir"]) / "client.sock", timeout=timeout)

    def wait_online(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        missing = set(ids)
        while time.monotonic() < deadline:
            dead = sorted(name for name, up in self.running().items() if not up)
            if dead:
                raise LabError(
                    f"lab process(es) exited: {', '.join(dead)}; see {self.directory}/logs/"
                )
            try:
                with self.client() as master:
                    missing = set(ids) - set(master.request("status")["online"])
            except ClientError:
                pass
            if not missing:
                return
            time.sleep(0.05)
        raise LabError(f"minions not online after {timeout:g}s: {', '.join(sorted(missing))}")

    def down(self) -> list[str]:
        """Stop what ``up`` started (and the services its minions supervise). Returns names."""
        self.load()
        procs = self.processes()
        own = self.services()
        supervised = self._supervised_services()
        saline_procs = {
            p["pid"]: p["marker"] for n, p in procs.items() if "pid" in p and n not in own
        }
        stopped = stop(saline_procs)
        stop(supervised)
        # etcd and the proxies last: masters stopping still talk to them; a service whose
        # data the next ``up`` wipes (etcd: its graceful stop waits for absent peers) is killed
        gentle = {n: p for n, p in own.items() if p.get("stop") != "kill"}
        stopped += stop({p["pid"]: p["marker"] for p in gentle.values()})
        killed = {p["pid"]: p["marker"] for n, p in own.items() if n not in gentle}
        stopped += stop(killed, sig=signal.SIGKILL)
        return sorted(name for name, p in procs.items() if p.get("pid") in stopped)

    def _supervised_services(self) -> dict[int, str]:
        """pid -> command line of the services the lab's minions started; a pidfile alone
        proves nothing (the pid may belong to another program by now), so each pid is
        signalled only while its command line is still the service's own ``argv``."""
        found: dict[int, str] = {}
        for config in self.directory.glob("minions/*/minion.yaml"):
            try:
                services = (yaml.safe_load(config.read_text()) or {}).get("services") or {}
            except (OSError, yaml.YAMLError):
                continue
            for pidfile in (config.parent / "cache" / "services").glob("*.pid"):
                argv = (services.get(pidfile.stem) or {}).get("argv")
                try:
                    pid = int(pidfile.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
                if isinstance(argv, list) and argv:
                    found[pid] = " ".join(str(a) for a in argv)
        return found

    def status(self) -> dict[str, Any]:
        self.load()
        running = self.running()
        online: list[str] = []
        if running.get("master"):
            try:
                with self.client() as master:
                    online = master.request("status")["online"]
            except ClientError:
                pass
        return {
            "dir": str(self.directory),
            "config": str(self.master_config),
            "port": self.state.get("port"),
            "metrics": self.state.get("metrics"),
            "master": {
                "pid": self.state.get("master", {}).get("pid"),
                "running": running.get("master", False),
            },
            "minions": {
                m: {
                    "pid": info.get("pid"),
                    "running": running.get(m, False),
                    "online": m in online,
                    "role": role_of(m),
                }
                for m, info in self.state.get("minions", {}).items()
            },
        }
