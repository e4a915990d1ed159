"""The lab's ``chef-backend-ctl``: the real tool's command lines, acting on the lab's services.

    python -m saline.lab.chefha.backend_ctl --lab DIR --node be2 status
    ... pgsql-follow [--force-basebackup] LEADER | reconfigure | restart etcd | ...

The minions of ``saline lab up --chef-ha`` call it through ``SALINE_CHEF_BACKEND_CTL``. Every
run is appended to the node's ``var/log/chef-backend/ctl.log``.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

from saline.lab.chefha import health, layout, pg, procs
from saline.lab.chefha.state import BACKENDS, ChefLabError, load, locked, node

SERVICES = ("postgresql", "etcd", "elasticsearch", "leaderl", "epmd")
_CIDRS = re.compile(r"^\s*postgresql\.md5_auth_cidr_addresses\s*=\s*\[(?P<items>[^\]]*)\]", re.M)


def _record(root: Path, line: str) -> None:
    log = root / "var/log/chef-backend/ctl.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"{time.time():.3f} {line}\n")


def cmd_status(lab: Path, name: str, args: argparse.Namespace) -> int:
    data = load(lab)
    rows = health.status_rows(data, node(data, name))
    sys.stdout.write(health.status_table(rows))
    return 0 if all(r[1].startswith("running") for r in rows) else 1


def cmd_cluster_status(lab: Path, name: str, args: argparse.Namespace) -> int:
    data = load(lab)
    roles = health.pg_roles(data)
    members = []
    for b in BACKENDS:
        services = data["nodes"][b]["services"]
        members.append(
            {
                "name": b,
                "address": data["nodes"][b]["address"],
                "postgresql": {"role": roles[b]},
                "etcd": {"healthy": health.etcd_healthy(services["etcd"])},
                "elasticsearch": {"running": procs.running(services["elasticsearch"])},
            }
        )
    # leaderl's view: the leader it designates (the lab's record), while its PostgreSQL
    # answers as a leader; none otherwise (a failover under way)
    designated = data["leader"]
    leader = designated if roles.get(designated) == "leader" else None
    print(json.dumps({"leader": leader, "nodes": members}, indent=2))
    return 0


def cidrs_of(rb_text: str) -> list[str]:
    """The md5_auth_cidr_addresses list of a chef-backend.rb (chef-backend's defaults if none)."""
    match = _CIDRS.search(rb_text)
    if match is None:
        return ["samehost", "samenet"]
    return re.findall(r"[\"']([^\"']+)[\"']", match["items"])


def cmd_reconfigure(lab: Path, name: str, args: argparse.Namespace) -> int:
    with locked(lab) as data:
        me = node(data, name)
        rb = Path(me["root"]) / layout.BACKEND_RB
        try:
            cidrs = cidrs_of(rb.read_text())
        except OSError as e:
            print(f"ERROR: cannot read {rb}: {e.strerror}", file=sys.stderr)
            return 1
        svc = me["services"]["postgresql"]
        pg.write_hba(svc, cidrs)
        if pg.postmaster_pid(svc) is not None:
            pg.run("pg_ctl", "reload", "-D", svc["data_dir"])
        _record(Path(me["root"]), f"reconfigure md5_auth_cidr_addresses={cidrs}")
    print("Chef Backend Reconfigured!")
    return 0


def cmd_pgsql_follow(lab: Path, name: str, args: argparse.Namespace) -> int:
    with locked(lab) as data:
        me = node(data, name)
        leader = node(data, args.leader)
        if leader is me:
            print(f"ERROR: {name} cannot follow itself", file=sys.stderr)
            return 1
        svc = me["services"]["postgresql"]
        target = (leader["address"], leader["services"]["postgresql"]["port"])
        if args.force_basebackup:
            pg.clone(svc, me["address"], me["name"], target, data["secrets"]["repl_password"])
        else:
            pg.follow(svc, me["address"], me["name"], target, data["secrets"])
        svc["role"] = "follower"
        _record(Path(me["root"]), f"pgsql-follow {leader['name']} force={args.force_basebackup}")
    print(f"{name} now follows {leader['name']} ({leader['address']})")
    return 0


def _service(lab: Path, name: str, service: str, action: str) -> int:
    with locked(lab) as data:
        me = node(data, name)
        if service in ("leaderl", "epmd"):
            print(f"ok: {action}: {service} (the lab runs no {service})")
            return 0
        svc = me["services"][service]
        if service == "postgresql":
            if action in ("stop", "restart"):
                pg.stop(svc, "fast")
            if action in ("start", "restart"):
                pg.start(svc)
        else:
            if action in ("stop", "restart"):
                procs.kill(svc, sig=15)
            if action in ("start", "restart"):
                procs.start(svc)
        _record(Path(me["root"]), f"{action} {service}")
    print(f"ok: {action}: {service}")
    return 0


def cmd_start(lab: Path, name: str, args: argparse.Namespace) -> int:
    return _service(lab, name, args.service, "start")


def cmd_stop(lab: Path, name: str, args: argparse.Namespace) -> int:
    return _service(lab, name, args.service, "stop")


def cmd_restart(lab: Path, name: str, args: argparse.Namespace) -> int:
    return _service(lab, name, args.service, "restart")


def cmd_create_cluster(lab: Path, name: str, args: argparse.Namespace) -> int:
    # `lab up` already created the cluster with this node's PostgreSQL as the first leader
    data = load(lab)
    _record(Path(node(data, name)["root"]), "create-cluster")
    print(f"Cluster created; {name} is the bootstrap node")
    return 0


def cmd_join_cluster(lab: Path, name: str, args: argparse.Namespace) -> int:
    data = load(lab)
    me, leader = node(data, name), node(data, args.leader)
    try:
        json.loads(Path(args.secrets).read_text())
    except (OSError, ValueError) as e:
        print(f"ERROR: cannot read shared secrets {args.secrets}: {e}", file=sys.stderr)
        return 1
    _record(Path(me["root"]), f"join-cluster {leader['name']}")
    print(f"{name} joined the cluster led by {leader['name']}")
    return 0


def cmd_gen_server_config(lab: Path, name: str, args: argparse.Namespace) -> int:
    data = load(lab)
    backends = [data["nodes"][b]["address"] for b in BACKENDS]
    text = layout.server_rb(args.fqdn, backends, data["secrets"]["password"])
    if args.file:
        layout.write_file(Path(args.file), text, 0o640)
    else:
        sys.stdout.write(text)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chef-backend-ctl", description="saline lab shim")
    p.add_argument("--lab", type=Path, required=True)
    p.add_argument("--node", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status").set_defaults(run=cmd_status)
    cs = sub.add_parser("cluster-status")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(run=cmd_cluster_status)
    sub.add_parser("reconfigure").set_defaults(run=cmd_reconfigure)
    follow = sub.add_parser("pgsql-follow")
    follow.add_argument("--force-basebackup", action="store_true")
    follow.add_argument("leader")
    follow.set_defaults(run=cmd_pgsql_follow)
    for action, run in (("start", cmd_start), ("stop", cmd_stop), ("restart", cmd_restart)):
        s = sub.add_parser(action)
        s.add_argument("service", choices=SERVICES)
        s.set_defaults(run=run)
    create = sub.add_parser("create-cluster")
    join = sub.add_parser("join-cluster")
    join.add_argument("leader")
    join.add_argument("-s", "--secrets-file-path", dest="secrets", required=True)
    for s in (create, join):
        s.add_argument("--accept-license", action="store_true")
        s.add_argument("--yes", action="store_true")
    create.set_defaults(run=cmd_create_cluster)
    join.set_defaults(run=cmd_join_cluster)
    gen = sub.add_parser("gen-server-config")
    gen.add_argument("fqdn")
    gen.add_argument("-f", "--filename", dest="file")
    gen.set_defaults(run=cmd_gen_server_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args.lab, args.node, args)
    except (ChefLabError, KeyError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
