"""``saline lab up --chef-ha``: a Chef HA cluster of real services on 127.0.1.x, with minions.

be1..be3 run real PostgreSQL 15 (be1 leads, be2 and be3 stream from base backups), a real
three-member etcd cluster and an Elasticsearch stand-in each; fe1 and fe2 hold a frontend's
files. Every node is a saline minion with its own address, root directory and grains, whose
``chef-backend-ctl``/``chef-server-ctl`` are the lab's shims. The master loads saline's
shipped Chef HA rules, runbooks and state tree.
"""

import functools
import secrets
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from saline.lab import processes
from saline.lab.chefha import health, layout, pg, procs
from saline.lab.chefha.state import BACKENDS, FRONTENDS, ChefLabError, load, save
from saline.lab.lab import Lab, LabError, is_masters_lab

if TYPE_CHECKING:
    from saline.lab.masters import MastersLab

DEFAULT_SUBNET = "127.0.1"


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ChefLabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:  # noqa: S310 - lab http URLs
            return bool(resp.status == 200)
    except OSError:
        return False


def _check_ports_free(backends: list[str]) -> None:
    """Every backend's service ports must be free: another lab may hold 127.0.1.x."""
    wanted = [
        (address, port, kind)
        for address in backends
        for port, kind in (
            (layout.PG_PORT, socket.SOCK_STREAM),
            (layout.ETCD_CLIENT_PORT, socket.SOCK_STREAM),
            (layout.ETCD_PEER_PORT, socket.SOCK_STREAM),
            (layout.ES_PORT, socket.SOCK_STREAM),
            (layout.NTP_PORT, socket.SOCK_DGRAM),
        )
    ]
    for address, port, kind in wanted:
        with socket.socket(socket.AF_INET, kind) as probe:
            # as the servers do: connections of a previous lab in TIME_WAIT do not count
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as e:
                raise ChefLabError(
                    f"{address}:{port} is in use ({e.strerror}): is another Chef HA lab "
                    "running? (`saline lab down --dir ...`)"
                ) from None


class ChefLab:
    """The Chef HA lab in ``directory``: up, status, down. With ``masters`` > 1 its master
    is a lab of several masters (``saline.lab.masters``: PostgreSQL store, leader etcd)."""

    def __init__(self, directory: Path, subnet: str = DEFAULT_SUBNET, masters: int = 1) -> None:
        self.directory = directory
        self.subnet = subnet
        self.masters = masters
        self.lab = Lab(directory)

    def several(self) -> "MastersLab | None":
        """The lab of several masters this lab runs on, if it does (up asked for it, or the
        lab on disk is one)."""
        from saline.lab.masters import MastersLab  # it imports this module

        if self.masters > 1 or is_masters_lab(self.directory):
            return MastersLab(self.directory)
        return None

    # -- up ----------------------------------------------------------------------------------

    def up(self, timeout: float = 60.0) -> dict[str, float]:
        """Start services, master and minions; :returns: seconds per phase."""
        if self.lab.state_file.exists():
            self.lab.load()
            if any(self.lab.running().values()):
                raise LabError(f"a lab is already running in {self.directory}; `lab down` first")
        if (self.directory / "chefha.json").exists():
            self.stop_services()
        timings: dict[str, float] = {}
        started = time.monotonic()
        data = self._layout()
        try:
            self._start_postgres(data)
            timings["postgresql"] = time.monotonic() - started
            self._start_processes(data)
            timings["etcd and stand-ins"] = time.monotonic() - started - timings["postgresql"]
            save(self.directory, data)
            self._write_pillar(data)
            mark = time.monotonic()
            several = self.several()
            count = len(BACKENDS) + len(FRONTENDS)
            per_minion = functools.partial(self._minion_config, data)
            if several is not None:
                phases = several.up(
                    count,
                    self.masters,
                    timeout=timeout,
                    per_minion=per_minion,
                    extra_master=self._master_config(data),
                )
                timings["masters' etcd and store"] = phases["total"] - phases["masters and minions"]
                self.lab.load()
            else:
                self.lab.up(
                    count,
                    timeout=timeout,
                    per_minion=per_minion,
                    extra_master=self._master_config(data),
                )
            self.directory.chmod(0o711)  # Lab keeps its dir 0700; postgres must traverse it
            timings["minions"] = time.monotonic() - mark
        except BaseException:
            save(self.directory, data)
            self.down()
            raise
        timings["total"] = time.monotonic() - started
        return timings

    def _layout(self) -> dict[str, Any]:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o711)  # postgres must traverse to its data dirs; listings stay private
        pg.check_traversable(d)
        addresses = layout.addresses(self.subnet)
        _check_ports_free([addresses[b] for b in BACKENDS])
        shutil.rmtree(d / "nodes", ignore_errors=True)
        password, repl = secrets.token_hex(16), secrets.token_hex(16)
        cidrs = layout.cidr_list(self.subnet)
        backend_addrs = [addresses[b] for b in BACKENDS]
        initial = ",".join(f"{b}=http://{addresses[b]}:{layout.ETCD_PEER_PORT}" for b in BACKENDS)
        token = f"saline-lab-{secrets.token_hex(4)}"
        nodes: dict[str, Any] = {}
        for name in (*BACKENDS, *FRONTENDS):
            root = d / "nodes" / name
            root.mkdir(parents=True)
            for part in (root.parent, root):
                part.chmod(0o755)
            address = addresses[name]
            node: dict[str, Any] = {"name": name, "address": address, "root": str(root)}
            if name in BACKENDS:
                node["role"] = "backend"
                services = layout.backend_services(root, address)
                etcd = services["etcd"]
                etcd["argv"] = procs.etcd_argv(name, etcd, initial, token)
                etcd["marker"] = etcd["data_dir"]
                es = services["elasticsearch"]
                Path(es["data_dir"]).mkdir(parents=True, exist_ok=True)
                es["argv"] = procs.es_argv(address, es)
                es["marker"] = es["state_file"]
                ntp = services["ntp"]
                Path(ntp["data_dir"]).mkdir(parents=True, exist_ok=True)
                ntp["argv"] = procs.ntp_argv(address, ntp)
                ntp["marker"] = ntp["skew_file"]
                node["services"] = services
                layout.write_backend_files(root, address, cidrs, password)
                layout.write_file(
                    root / layout.PGPASS, f"*:{layout.PG_PORT}:*:saline:{password}\n", 0o600
                )
                node["ctl"] = str(
                    layout.write_shim(
                        root, "chef-backend-ctl", "saline.lab.chefha.backend_ctl", d, name
                    )
                )
            else:
                node["role"] = "frontend"
                node["services"] = {}
                layout.write_frontend_files(root, f"{name}.lab", backend_addrs, password)
                node["ctl"] = str(
                    layout.write_shim(
                        root, "chef-server-ctl", "saline.lab.chefha.server_ctl", d, name
                    )
                )
            nodes[name] = node
        data = {
            "dir": str(d),
            "subnet": self.subnet,
            "secrets": {"password": password, "repl_password": repl},
            "leader": BACKENDS[0],
            "target_level": {"major": 3, "minor": 13},
            "nodes": nodes,
        }
        save(d, data)
        return data

    def _start_postgres(self, data: dict[str, Any]) -> None:
        leader = data["nodes"][data["leader"]]
        lsvc = leader["services"]["postgresql"]
        pg.init_leader(lsvc, leader["address"], leader["name"], data["secrets"])
        lsvc["role"] = "leader"
        for name in BACKENDS[1:]:
            node = data["nodes"][name]
            svc = node["services"]["postgresql"]
            pg.clone(
                svc,
                node["address"],
                name,
                (leader["address"], lsvc["port"]),
                data["secrets"]["repl_password"],
            )
            svc["role"] = "follower"

    def _start_processes(self, data: dict[str, Any]) -> None:
        for name in BACKENDS:
            services = data["nodes"][name]["services"]
            for svc in (services["etcd"], services["elasticsearch"], services["ntp"]):
                procs.start(svc)
        for name in BACKENDS:
            node = data["nodes"][name]
            etcd, es = node["services"]["etcd"], node["services"]["elasticsearch"]
            _wait(lambda s=etcd: health.etcd_healthy(s), 30, f"etcd on {name}")
            es_url = f"http://{node['address']}:{es['port']}/"
            _wait(lambda u=es_url: _http_ok(u), 30, f"elasticsearch stand-in on {name}")

    # -- configs -----------------------------------------------------------------------------

    def _master_config(self, data: dict[str, Any]) -> dict[str, Any]:
        # the master's own record of each node: pillar is compiled on these, never on what
        # a minion claims (a frontend claiming role backend gets no backend secret)
        trusted = {
            minion_id: {"role": node["role"], "chef_root": node["root"]}
            for minion_id, node in data["nodes"].items()
        }
        from states.shipped import SHIPPED_STATES  # the lab is an entry point: lazily

        return {
            "file_roots": [str(SHIPPED_STATES), str(self.directory / "states")],
            "job_timeout": 60.0,
            "minion_grains": trusted,
        }

    def _minion_config(self, data: dict[str, Any], minion_id: str) -> dict[str, Any]:
        node = data["nodes"][minion_id]
        address, root = node["address"], node["root"]
        grains = {
            "role": node["role"],
            "lab": True,
            "publish_address": address,
            "chef_root": root,
        }
        if node["role"] == "frontend":
            return {
                "grains": grains,
                "env": {"SALINE_CHEF_SERVER_CTL": node["ctl"]},
                "beacons": {
                    "migration_level": {
                        "path": f"{root}/{layout.MIGRATION_LEVEL}",
                        "interval": 1,
                        "reassert": 5,
                        "announce": True,
                    },
                    "chef_server_status": {"interval": 1, "reassert": 5, "announce": True},
                },
            }
        services = node["services"]
        port = services["postgresql"]["port"]
        return {
            "grains": grains,
            # libpq reads the password from PGPASSFILE: beacons and jobs never carry it
            "env": {
                "SALINE_CHEF_BACKEND_CTL": node["ctl"],
                "SALINE_CHEF_BACKEND_PGDATA": services["postgresql"]["data_dir"],
                "PGPASSFILE": f"{root}/{layout.PGPASS}",
            },
            "beacons": {
                "pg_replication": {
                    "host": address,
                    "port": port,
                    "user": "saline",
                    "timeout": 2,
                    # the lab's followers reply every second (wal_receiver_status_interval)
                    "max_reply_age": 4,
                    "interval": 1,
                    "reassert": 5,
                    "announce": True,
                },
                "etcd_member": {
                    "beacon": "etcd_health",
                    "endpoints": [services["etcd"]["client_url"]],
                    "timeout": 1,
                    "interval": 1,
                    "reassert": 5,
                },
                "elasticsearch_health": {
                    "url": f"http://{address}:{services['elasticsearch']['port']}",
                    "timeout": 1,
                    "interval": 1,
                    "reassert": 5,
                },
                # the four status lines, through the shim: what an operator reads first
                "chef_backend_status": {"interval": 5},
                "chef_secrets": {
                    "beacon": "file",
                    "paths": [f"{root}/{rel}" for rel in layout.BACKEND_SECRETS],
                    "interval": 1,
                },
                "time_drift": {
                    "server": address,
                    "port": services["ntp"]["port"],
                    "timeout": 1,
                    "interval": 1,
                    "reassert": 5,
                    "refresh": 10,  # offsets move within "ok": keep the master's view fresh
                    "announce": True,
                },
                "config_drift": {
                    "path": f"{root}/{layout.BACKEND_RB}",
                    "expected": {
                        "postgresql.md5_auth_cidr_addresses": layout.cidr_list(data["subnet"])
                    },
                    "interval": 1,
                    "reassert": 5,
                    "announce": True,
                },
            },
        }

    def _write_pillar(self, data: dict[str, Any]) -> None:
        nodes = data["nodes"]
        pillar = {
            "chef_ha": {
                "backends": {b: nodes[b]["address"] for b in BACKENDS},
                "frontends": {f: nodes[f]["address"] for f in FRONTENDS},
                "md5_auth_cidr_addresses": layout.cidr_list(data["subnet"]),
                "accounts": False,
                "secrets_owner": "root",
                "secrets_group": "root",
                # a 2-core lab machine with an unsynchronised kernel clock: checks stay on,
                # with minimums it can meet
                "preflight": {"cores": 1, "memory_gb": 1, "disk_gb": 1, "clock": False},
            }
        }
        pdir = self.directory / "pillar"
        pdir.mkdir(exist_ok=True)
        (pdir / "top.yaml").write_text("'*': [chef_ha]\n")
        text = yaml.safe_dump(pillar, sort_keys=False)
        # the pillar is rendered with each minion's trusted grains: every node gets its own shims
        text += (
            "  backend_ctl: '{{ grains.chef_root }}/bin/chef-backend-ctl'\n"
            "  server_ctl: '{{ grains.chef_root }}/bin/chef-server-ctl'\n"
        )
        (pdir / "chef_ha.yaml").write_text(text)

    # -- down and status ---------------------------------------------------------------------

    def stop_services(self) -> None:
        """Stop every service the lab record names (nothing else)."""
        try:
            data = load(self.directory)
        except ChefLabError:
            return
        for node in data["nodes"].values():
            for name, svc in node.get("services", {}).items():
                if name == "postgresql":
                    try:
                        pg.stop(svc, "immediate")
                    except ChefLabError as e:
                        print(f"{node['name']}: {e}", file=sys.stderr)
                elif "argv" in svc:
                    procs.kill(svc)
        save(self.directory, data)

    def down(self) -> list[str]:
        stopped: list[str] = []
        several = self.several()
        if several is not None and self.lab.state_file.exists():
            stopped = several.down()
        elif self.lab.state_file.exists():
            stopped = self.lab.down()
        self.stop_services()
        processes.reap()
        return stopped

    def status(self) -> dict[str, Any]:
        several = self.several()
        report = several.status() if several is not None else self.lab.status()
        data = load(self.directory)
        nodes: dict[str, Any] = {}
        for name, node in data["nodes"].items():
            services: dict[str, Any] = {}
            for sname, svc in node.get("services", {}).items():
                pid = (
                    pg.postmaster_pid(svc)
                    if sname == "postgresql"
                    else (svc.get("pid") if procs.running(svc) else None)
                )
                services[sname] = {
                    "port": svc.get("port"),
                    "data_dir": svc.get("data_dir"),
                    "pid": pid,
                    "running": pid is not None,
                    **({"role": svc["role"]} if "role" in svc else {}),
                }
            nodes[name] = {
                "address": node["address"],
                "role": node["role"],
                "root": node["root"],
                "ctl": node["ctl"],
                "minion": report["minions"].get(name, {}),
                "services": services,
            }
        return {**report, "chef_ha": True, "leader": data["leader"], "nodes": nodes}


def lab_record(directory: Path) -> dict[str, Any]:
    """The raw record (passwords included) for tests and tools on this machine."""
    return load(directory)
