"""The lab's ``chef-server-ctl``: reconfigure, upgrade, user-create, org-create, status and
start/stop/restart SERVICE on a lab frontend.

``status`` prints runit's lines for the frontend's services (:data:`layout.SERVER_SERVICES`)
from the node's service states (``var/opt/opscode/lab-services.json``, every service running
unless the fault ``fe-service-down`` or ``stop`` said otherwise) and exits 3 when one is not
running, as omnibus-ctl does; ``restart``/``start`` run it again, ``stop`` stops it.

``reconfigure`` refuses, as the real one does, to run without a readable migration-level
(``{"major": N, "minor": N}``) or without ``chef-server.rb``; each run is appended to the
node's ``var/log/opscode/reconfigure.log``, which tests and the demo read.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from saline.lab.chefha import layout
from saline.lab.chefha.state import ChefLabError, load, node


def _log(root: Path, name: str, line: str) -> None:
    log = root / "var/log/opscode" / name
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"{time.time():.3f} {line}\n")


def read_level(root: Path) -> dict[str, int]:
    """The frontend's migration level; :raises ChefLabError: missing or unparsable."""
    path = root / layout.MIGRATION_LEVEL
    try:
        level: Any = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ChefLabError(f"migration-level file {path} not found") from e
    except (OSError, ValueError) as e:
        raise ChefLabError(f"migration-level file {path} is not valid JSON: {e}") from e
    if not (
        isinstance(level, dict) and all(isinstance(level.get(k), int) for k in ("major", "minor"))
    ):
        raise ChefLabError(f"migration-level file {path} lacks integer major and minor")
    return {"major": level["major"], "minor": level["minor"]}


def cmd_reconfigure(root: Path, data: dict[str, Any], args: argparse.Namespace) -> int:
    level = read_level(root)
    if not (root / layout.SERVER_RB).is_file():
        raise ChefLabError(f"{root / layout.SERVER_RB} not found")
    _log(root, "reconfigure.log", f"reconfigure level={level['major']}.{level['minor']}")
    print("Chef Infra Server Reconfigured!")
    return 0


def cmd_upgrade(root: Path, data: dict[str, Any], args: argparse.Namespace) -> int:
    level = read_level(root)
    target = data["target_level"]
    if (target["major"], target["minor"]) > (level["major"], level["minor"]):
        layout.write_file(root / layout.MIGRATION_LEVEL, json.dumps(target) + "\n", 0o644)
        level = target
    _log(root, "reconfigure.log", f"upgrade level={level['major']}.{level['minor']}")
    print(f"Chef Infra Server upgraded; migration level {level['major']}.{level['minor']}")
    return 0


def service_states(root: Path) -> dict[str, dict[str, Any]]:
    """Each frontend service's ``{"state", "since", "pid"}``; missing ones run."""
    path = root / layout.FRONTEND_SERVICES
    try:
        known: dict[str, dict[str, Any]] = json.loads(path.read_text())
    except FileNotFoundError:
        known = {}
    except (OSError, ValueError) as e:
        raise ChefLabError(f"{path}: {e}") from e
    started = path.parent.stat().st_mtime if path.parent.exists() else time.time()
    default = {"state": "run", "since": started, "pid": 0}
    return {name: known.get(name, default) for name in layout.SERVER_SERVICES}


def set_service(root: Path, service: str, state: str) -> None:
    states = service_states(root)
    if service not in states:
        raise ChefLabError(f"no service {service!r} (services: {', '.join(states)})")
    pid = 0 if state != "run" else 20000 + int(time.time() * 1000) % 40000
    states[service] = {"state": state, "since": time.time(), "pid": pid}
    layout.write_file(root / layout.FRONTEND_SERVICES, json.dumps(states) + "\n", 0o644)


def cmd_status(root: Path, data: dict[str, Any], args: argparse.Namespace) -> int:
    now = time.time()
    down = 0
    for name, st in service_states(root).items():
        seconds = max(int(now - st["since"]), 0)
        if st["state"] == "run":
            print(
                f"run: {name}: (pid {st['pid'] or 1000}) {seconds}s; run: log: (pid 999) {seconds}s"
            )
        else:
            down += 1
            print(f"down: {name}: {seconds}s, normally up; run: log: (pid 999) {seconds}s")
    return 3 if down else 0


def _service_command(action: str) -> Any:
    def run(root: Path, data: dict[str, Any], args: argparse.Namespace) -> int:
        set_service(root, args.service, "down" if action == "stop" else "run")
        _log(root, "services.log", f"{action} {args.service}")
        print(f"ok: {action}: {args.service}")
        return 0

    return run


def cmd_user_create(root: Path, data: dict[str, Any], args: argparse.Namespace) -> int:
    # the password is never written anywhere
    _log(root, "accounts.log", f"user-create {args.username} {args.email}")
    if args.filename:
        layout.write_file(Path(args.filename), "-----BEGIN RSA PRIVATE KEY-----\n(lab)\n", 0o600)
    return 0


def cmd_org_create(root: Path, data: dict[str, Any], args: argparse.Namespace) -> int:
    _log(root, "accounts.log", f"org-create {args.short_name} assoc={args.association_user}")
    if args.filename:
        layout.write_file(Path(args.filename), "-----BEGIN RSA PRIVATE KEY-----\n(lab)\n", 0o600)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chef-server-ctl", description="saline lab shim")
    p.add_argument("--lab", type=Path, required=True)
    p.add_argument("--node", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("reconfigure").set_defaults(run=cmd_reconfigure)
    sub.add_parser("upgrade").set_defaults(run=cmd_upgrade)
    sub.add_parser("status").set_defaults(run=cmd_status)
    for action in ("start", "stop", "restart"):
        service = sub.add_parser(action)
        service.add_argument("service")
        service.set_defaults(run=_service_command(action))
    user = sub.add_parser("user-create")
    for field in ("username", "first_name", "last_name", "email", "password"):
        user.add_argument(field)
    user.add_argument("--filename", "-f")
    user.set_defaults(run=cmd_user_create)
    org = sub.add_parser("org-create")
    org.add_argument("short_name")
    org.add_argument("full_name")
    org.add_argument("--association_user", "-a")
    org.add_argument("--filename", "-f")
    org.set_defaults(run=cmd_org_create)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        data = load(args.lab)
        root = Path(node(data, args.node)["root"])
        code: int = args.run(root, data, args)
    except ChefLabError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
