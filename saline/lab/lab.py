"""``saline lab``: lay out configs and keys in DIR, start a master and minions, stop them.

Everything the lab starts is recorded in ``DIR/lab.json`` (pid and the config path that
appears on its command line); ``down`` stops exactly those processes and nothing else.
"""

import hashlib
import json
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


def role_of(minion_id: str) -> str:
    return "backend" if minion_id.startswith("be") else "frontend"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _sock_dir(directory: Path) -> Path:
    preferred = directory / "master" / "sock"
    if len(str(preferred / "client.sock")) <= _SUN_PATH_MAX:
        return preferred
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"saline-lab-{digest}"


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
        """name -> {pid, marker}; the marker is the config path on its command line."""
        procs: dict[str, dict[str, Any]] = {}
        if "master" in self.state:
            procs["master"] = self.state["master"]
        procs.update(self.state.get("minions", {}))
        return procs

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
    ) -> None:
        """Write master and minion configs and keys; ``per_minion(id)`` adds to one minion's
        config and ``extra_master`` to the master's (both override the defaults)."""
        d = ensure_dir(self.directory)
        for sub in ("states", "pillar", "reactors", "runbooks", "logs"):
            (d / sub).mkdir(exist_ok=True)  # files an operator put there are kept
        master_dir = d / "master"
        pki = ensure_dir(master_dir / "pki")
        master_keys = load_or_create_keypair(pki, "master")
        ring = KeyRing(pki)
        sock_dir = _sock_dir(d)
        master_cfg = {
            "interface": "127.0.0.1",
            "port": port,
            "pki_dir": str(pki),
            "data_dir": str(master_dir / "data"),
            "sock_dir": str(sock_dir),
            "log_file": str(d / "logs" / "master.log"),
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
            **(extra_master or {}),
        }
        self.master_config.write_text(yaml.safe_dump(master_cfg, sort_keys=False))
        minions: dict[str, Any] = {}
        for minion_id in lab_ids(count):
            mdir = ensure_dir(d / "minions" / minion_id)
            mpki = ensure_dir(mdir / "pki")
            keys = load_or_create_keypair(mpki, "minion")
            existing = ring.get(minion_id, KeyState.ACCEPTED)
            if existing is None or existing.public != keys.public:
                for state in KeyState:
                    if ring.get(minion_id, state) is not None:
                        ring.delete(minion_id)
                ring.add(minion_id, keys.public, KeyState.ACCEPTED)
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
            cfg.update(extra_minion or {})
            cfg.update(per_minion(minion_id) if per_minion else {})
            path = mdir / "minion.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            minions[minion_id] = {"config": str(path)}
        self.state = {"dir": str(d), "port": port, "minions": minions}
        if master_cfg["metrics_listen"] is not None:
            self.state["metrics"] = f"http://{master_cfg['metrics_listen']}/metrics"

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
        logs = self.directory / "logs"
        self.start_master()
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
        self.wait_online(list(self.state["minions"]), timeout)
        return time.monotonic() - started

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
        services = self._supervised_services()
        by_pid = {p["pid"]: p["marker"] for p in procs.values() if "pid" in p}
        stopped = stop(by_pid)
        stop(services)
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
