"""Where everything of a Chef HA lab node lives, and the files a fresh node starts with.

A node's ``root`` stands in for ``/``: the formula's paths (``/etc/chef-backend/...``,
``/var/opt/opscode/...``) are the real ones under it, so the same states and modules run on
a real node with ``chef_root`` empty.
"""

import json
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any

from saline.lab.chefha.state import BACKENDS, FRONTENDS

PG_PORT = 5432
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ES_PORT = 9200
NTP_PORT = 10123  # an SNTP stand-in per node; 123 may belong to the machine's own ntpd
#: the migration level a freshly installed lab frontend has
INITIAL_LEVEL = {"major": 3, "minor": 12}

BACKEND_RB = "etc/chef-backend/chef-backend.rb"
BACKEND_SECRETS = {  # the reference's table: path -> mode (owner/group follow pillar)
    "etc/chef-backend/secrets.json": 0o640,
    "var/opt/chef-backend/leaderl/data/sys.config": 0o600,
    "var/opt/chef-backend/PostgreSQL/9.5/recovery.conf": 0o600,
}
SERVER_RB = "etc/opscode/chef-server.rb"
FRONTEND_SECRETS = "etc/opscode/private-chef-secrets.json"
MIGRATION_LEVEL = "var/opt/opscode/upgrades/migration-level"
BOOTSTRAPPED = "var/opt/opscode/bootstrapped"
#: the lab frontend's service states (chef-server-ctl status/restart; fault fe-service-down)
FRONTEND_SERVICES = "var/opt/opscode/lab-services.json"
#: the services a lab frontend reports, as a Chef Infra Server frontend of an HA cluster runs
SERVER_SERVICES = ("bookshelf", "nginx", "oc_bifrost", "oc_id", "opscode-erchef", "redis_lb")
#: the lab's libpq password file (mode 0600), named by the minion's PGPASSFILE
PGPASS = ".pgpass"


def addresses(subnet: str) -> dict[str, str]:
    return {name: f"{subnet}.{i}" for i, name in enumerate((*BACKENDS, *FRONTENDS), 1)}


def cidr_list(subnet: str) -> list[str]:
    return ["samehost", "samenet", f"{subnet}.0/24"]


def backend_rb(address: str, cidrs: list[str]) -> str:
    quoted = ", ".join(f'"{c}"' for c in cidrs)
    return (
        f"publish_address '{address}' # External ip address of this backend box\n"
        f"postgresql.md5_auth_cidr_addresses = [{quoted}]\n"
    )


def backend_services(root: Path, address: str) -> dict[str, Any]:
    opt, log = root / "var/opt/chef-backend", root / "var/log/chef-backend"
    return {
        "postgresql": {
            "port": PG_PORT,
            "data_dir": str(opt / "postgresql/15/data"),
            "sock_dir": str(opt / "postgresql/sock"),
            "log": str(log / "postgresql/postgresql.log"),
        },
        "etcd": {
            "client_url": f"http://{address}:{ETCD_CLIENT_PORT}",
            "peer_url": f"http://{address}:{ETCD_PEER_PORT}",
            "port": ETCD_CLIENT_PORT,
            "data_dir": str(opt / "etcd/data"),
            "log": str(log / "etcd/etcd.log"),
        },
        # not a Chef service: the lab's time source, whose skew file fakes a drifting clock
        "ntp": {
            "port": NTP_PORT,
            "data_dir": str(root / "var/lib/saline-lab"),
            "skew_file": str(root / "var/lib/saline-lab/clock-skew"),
            "log": str(root / "var/log/saline-lab/ntp.log"),
        },
        "elasticsearch": {
            "port": ES_PORT,
            "data_dir": str(opt / "elasticsearch"),
            "state_file": str(opt / "elasticsearch/faults.json"),
            "log": str(log / "elasticsearch/standin.log"),
        },
    }


def write_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def write_backend_files(root: Path, address: str, cidrs: list[str], password: str) -> None:
    write_file(root / BACKEND_RB, backend_rb(address, cidrs), 0o644)
    body = json.dumps({"postgresql": {"db_superuser_password": password}}) + "\n"
    for rel, mode in BACKEND_SECRETS.items():
        write_file(root / rel, body, mode)


def server_rb(fqdn: str, backends: list[str], password: str) -> str:
    """What ``chef-backend-ctl gen-server-config`` writes for a frontend."""
    members = ", ".join(f'"{b}"' for b in backends)
    return (
        f"fqdn '{fqdn}'\n"
        "use_chef_backend true\n"
        f"chef_backend_members [{members}]\n"
        f"haproxy['remote_postgresql_port'] = {PG_PORT}\n"
        f"haproxy['remote_elasticsearch_port'] = {ES_PORT}\n"
        "postgresql['external'] = true\n"
        "postgresql['vip'] = '127.0.0.1'\n"
        "postgresql['db_superuser'] = 'saline'\n"
        f"postgresql['db_superuser_password'] = '{password}'\n"
        "opscode_erchef['search_provider'] = 'elasticsearch'\n"
    )


def write_frontend_files(root: Path, fqdn: str, backends: list[str], password: str) -> None:
    write_file(root / SERVER_RB, server_rb(fqdn, backends, password), 0o640)
    secrets_body = json.dumps({"chef-server": {"superuser_key": secrets.token_hex(16)}})
    write_file(root / FRONTEND_SECRETS, secrets_body + "\n", 0o600)
    write_file(root / MIGRATION_LEVEL, json.dumps(INITIAL_LEVEL) + "\n", 0o644)
    write_file(root / BOOTSTRAPPED, "", 0o644)


def write_shim(root: Path, tool: str, module: str, lab_dir: Path, node: str) -> Path:
    """``root/bin/TOOL``: runs the lab's shim for this node with the lab's interpreter."""
    argv = [sys.executable, "-m", module, "--lab", str(lab_dir), "--node", node]
    path = root / "bin" / tool
    write_file(path, f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n', 0o755)
    return path
