"""The shipped Chef HA state tree (``states/tree``) through the real state engine.

Each test compiles the tree the way a minion does (``saline://`` files from the tree,
execution functions from the real minion registry) with grains ``role``,
``publish_address`` and ``chef_root`` pointing into ``tmp_path``, runs it, and looks at
the files left behind. The ctl tools are a tiny script logging its arguments, so a test
sees exactly when ``reconfigure`` ran. Preflight verdicts are golden case files under
``tests/cases/chef_states/preflight`` (facts in, verdicts out).
"""

import grp
import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from minion import modules
from minion.config import MinionConfig
from minion.modules import preflight
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError, StateError
from states.engine import compile_states, run
from states.model import Chunk, ChunkResult
from states.modules import REGISTRY
from states.modules.base import StateContext
from states.shipped import SHIPPED_STATES

TREE = SHIPPED_STATES
CASES = Path(__file__).parent.parent / "cases" / "chef_states"
ME = pwd.getpwuid(os.geteuid()).pw_name
MY_GROUP = grp.getgrgid(os.getegid()).gr_name

#: minimums every test machine meets (the clock of a CI container is rarely synchronized)
EASY_PREFLIGHT = {"cores": 1, "memory_gb": 0.1, "disk_gb": 0.001, "clock": False}
BACKEND_SECRETS = {
    "secrets.json": ("etc/chef-backend/secrets.json", 0o640),
    "sys.config": ("var/opt/chef-backend/leaderl/data/sys.config", 0o600),
    "recovery.conf": ("var/opt/chef-backend/PostgreSQL/9.5/recovery.conf", 0o600),
}


class TreeFiles:
    """The master's file server over ``states/tree``."""

    def get(self, url: str) -> bytes:
        path = TREE / url.removeprefix("saline://")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"no such file on the master: {url}") from None


class Node:
    """One Chef HA node under ``tmp_path``: its grains, pillar, ctl log and state runs."""

    def __init__(self, tmp_path: Path, role: str, address: str, pillar: dict[str, Any]) -> None:
        self.root = tmp_path / "node"
        self.root.mkdir()
        self.log = tmp_path / "ctl.log"
        self.ctl = tmp_path / "fake-ctl"
        # The real tools take minutes; this one records that it was asked.
        self.ctl.write_text(f'#!/bin/sh\necho "$0 $*" >> {self.log}\n')
        self.ctl.chmod(0o755)
        self.grains = {"role": role, "publish_address": address, "chef_root": str(self.root)}
        self.pillar = {"chef_ha": pillar}
        config = MinionConfig(id="n1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
        services = SupervisorProvider({}, tmp_path / "services")
        self._mctx = Context(minion_id="n1", config=config, grains=self.grains, services=services)
        self._functions = modules.registry()

    def call(self, fun: str, *args: Any, **kwargs: Any) -> Any:
        try:
            value = self._functions[fun](self._mctx, *args, **kwargs)
        except ExecutionError as exc:
            raise StateError(f"{fun}: {exc}") from exc
        return value.value if isinstance(value, Outcome) else value

    def compile(self, names: list[str] | None) -> list[Chunk]:
        return compile_states(
            names,
            files=TreeFiles(),
            minion_id="n1",
            grains=self.grains,
            pillar=self.pillar,
            call=self.call,
            registry=REGISTRY,
        )

    def apply(
        self, *names: str, test: bool = False, secrets: frozenset[str] = frozenset()
    ) -> dict[str, ChunkResult]:
        """Run the states (none: the highstate) and return results by chunk id."""
        ctx = StateContext(
            minion_id="n1",
            grains=self.grains,
            pillar=self.pillar,
            test=test,
            call=self.call,
            files=TreeFiles(),
            secrets=secrets,
        )
        results = run(self.compile(list(names) or None), ctx, REGISTRY)
        return {r.id: r for r in results}

    def path(self, relative: str) -> Path:
        return self.root / relative

    def ctl_runs(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """Every path under ``root``: content, mode and owner."""
    tree: dict[str, tuple[bytes, int, int, int]] = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        tree[str(p)] = (p.read_bytes() if p.is_file() else b"", st.st_mode, st.st_uid, st.st_gid)
    return tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def failures(results: dict[str, ChunkResult]) -> dict[str, str]:
    return {k: f"{r.name}: {r.comment}" for k, r in results.items() if r.result is False}


# -- backend -------------------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> Node:
    node = Node(tmp_path, "backend", "10.0.0.1", {})
    node.pillar["chef_ha"] = {
        "backends": {"be1": "10.0.0.1", "be2": "10.0.0.2", "be3": "10.0.0.3"},
        # fe3 shares be3's address: one rule per address
        "frontends": {"fe1": "192.168.1.4", "fe2": "192.168.1.5", "fe3": "10.0.0.3"},
        # out of order, repeated, one of the two defaults given: fixed by the state
        "md5_auth_cidr_addresses": ["192.168.1.0/24", "samenet", "10.0.0.0/24", "192.168.1.0/24"],
        "accounts": False,
        "secrets_owner": ME,
        "secrets_group": MY_GROUP,
        "backend_ctl": str(node.ctl),
        "preflight": EASY_PREFLIGHT,
    }
    return node


def write_secrets(node: Node, *names: str) -> None:
    """Backend secrets as chef-backend would leave them, but world-readable."""
    for name in names:
        path = node.path(BACKEND_SECRETS[name][0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
        path.chmod(0o644)


def test_backend_writes_config_and_firewall(backend: Node) -> None:
    results = backend.apply("chef.backend")
    assert failures(results) == {}
    expected = (CASES / "backend" / "chef-backend.rb").read_text()
    assert backend.path("etc/chef-backend/chef-backend.rb").read_text() == expected
    rules = backend.path("etc/iptables/rules.v4")
    assert rules.read_text() == (CASES / "backend" / "rules.v4").read_text()
    assert mode(rules) == 0o640
    assert backend.ctl_runs() == [f"{backend.ctl} reconfigure"]


def test_md5_auth_defaults_come_first_even_without_pillar(backend: Node) -> None:
    del backend.pillar["chef_ha"]["md5_auth_cidr_addresses"]
    assert failures(backend.apply("chef.backend")) == {}
    text = backend.path("etc/chef-backend/chef-backend.rb").read_text()
    assert 'postgresql.md5_auth_cidr_addresses = ["samehost", "samenet"]\n' in text


def test_firewall_allows_only_members(backend: Node) -> None:
    backend.apply("chef.backend")
    lines = backend.path("etc/iptables/rules.v4").read_text().splitlines()
    accepted = [x.split()[3] for x in lines if x.startswith("-A CHEF-BACKEND -s ")]
    assert accepted == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.1.4", "192.168.1.5"]
    rules = [x for x in lines if x.startswith("-A ")]
    # every Chef port goes through the chain, which ends by dropping the rest
    assert rules[0] == (
        "-A INPUT -p tcp -m multiport --dports 2379,2380,5432,7331,9200:9400 -j CHEF-BACKEND"
    )
    assert rules[-1] == "-A CHEF-BACKEND -j DROP"
    assert all(" ACCEPT" not in x or "CHEF-BACKEND" in x for x in rules)


def test_secret_modes_fixed_content_kept_missing_not_created(backend: Node) -> None:
    write_secrets(backend, "secrets.json", "sys.config")
    results = backend.apply("chef.backend")
    assert failures(results) == {}
    for name in ("secrets.json", "sys.config"):
        relative, wanted = BACKEND_SECRETS[name]
        path = backend.path(relative)
        assert mode(path) == wanted, name
        assert path.read_text() == f"content of {name}\n", "content is chef-backend's"
        assert (path.stat().st_uid, path.stat().st_gid) == (os.geteuid(), os.getegid())
    assert results["chef-backend-secrets-json"].changes == {"mode": "0640"}
    assert results["chef-backend-leaderl-sys-config"].changes == {"mode": "0600"}
    # an empty recovery.conf would make a leader start as a standby
    assert not backend.path(BACKEND_SECRETS["recovery.conf"][0]).exists()
    missing = results["chef-backend-recovery-conf"]
    assert missing.result is True and "does not exist (yet)" in missing.name


def test_backend_test_mode_changes_nothing_and_reports(backend: Node) -> None:
    write_secrets(backend, "secrets.json", "sys.config", "recovery.conf")
    before = snapshot(backend.root)
    results = backend.apply("chef.backend", test=True)
    assert snapshot(backend.root) == before
    assert backend.ctl_runs() == []
    would = {k for k, r in results.items() if r.result is None}
    assert would == {
        "chef-backend-rb",
        "chef-backend-iptables",
        "chef-backend-reconfigure",
        "chef-backend-secrets-json",
        "chef-backend-leaderl-sys-config",
        "chef-backend-recovery-conf",
    }
    assert results["chef-backend-rb"].changes["created"] is True
    assert results["chef-backend-recovery-conf"].changes == {"mode": "0600"}
    assert results["chef-backend-reconfigure"].comment == f"would run {backend.ctl} reconfigure"
    assert failures(results) == {}


def test_backend_idempotent_and_reconfigure_only_on_config_change(backend: Node) -> None:
    write_secrets(backend, "secrets.json")
    backend.apply("chef.backend")
    again = backend.apply("chef.backend")
    assert {k: r.changes for k, r in again.items() if r.changes} == {}
    assert failures(again) == {}
    assert again["chef-backend-reconfigure"].comment == (
        "no changes in onchanges requisites; skipped"
    )
    # a secret's mode drifting back is repaired without a reconfigure
    backend.path(BACKEND_SECRETS["secrets.json"][0]).chmod(0o644)
    repaired = backend.apply("chef.backend")
    assert repaired["chef-backend-secrets-json"].changes == {"mode": "0640"}
    assert backend.ctl_runs() == [f"{backend.ctl} reconfigure"]
    # a new network in pillar changes chef-backend.rb: now reconfigure runs
    backend.pillar["chef_ha"]["md5_auth_cidr_addresses"].append("172.16.0.0/16")
    changed = backend.apply("chef.backend")
    assert changed["chef-backend-rb"].changes["diff"]
    assert changed["chef-backend-reconfigure"].result is True
    assert backend.ctl_runs() == [f"{backend.ctl} reconfigure"] * 2


def test_backend_refuses_inconsistent_pillar_before_touching_anything(backend: Node) -> None:
    backend.grains["publish_address"] = "10.9.9.9"
    backend.pillar["chef_ha"]["md5_auth_cidr_addresses"] = "10.0.0.0/24"
    results = backend.apply("chef.backend")
    refused = results["chef-backend-pillar"]
    assert refused.result is False
    assert refused.name == (
        "chef.backend refused: publish_address 10.9.9.9 (grain) is not one of "
        "chef_ha:backends; chef_ha:md5_auth_cidr_addresses must be a list"
    )
    assert list(backend.root.iterdir()) == []


def test_backend_accounts_are_system_accounts_without_login(backend: Node) -> None:
    backend.pillar["chef_ha"]["accounts"] = True
    write_secrets(backend, "secrets.json")
    # compiled only: creating system accounts is not a unit test's business
    chunks = {c.id: c for c in backend.compile(["chef.backend"])}
    for account in ("chef_pgsql", "chef-backend"):
        group = chunks[f"chef-group-{account}"]
        assert (group.state, group.name, group.kwargs) == (
            "group.present",
            account,
            {"system": True},
        )
        user = chunks[f"chef-user-{account}"]
        assert user.state == "user.present" and user.name == account
        assert user.kwargs == {
            "gid": account,
            "system": True,
            "shell": "/usr/sbin/nologin",
            "createhome": False,
        }
        assert user.require == [f"group.present:chef-group-{account}"]
    order = list(chunks)
    assert order.index("chef-user-chef_pgsql") < order.index("chef-backend-secrets-json")
    assert chunks["chef-backend-secrets-json"].require == [
        "user.present:chef-user-chef_pgsql",
        "group.present:chef-group-chef_pgsql",
    ]


def test_iptables_restore_runs_only_when_the_rules_change(backend: Node) -> None:
    backend.pillar["chef_ha"]["iptables_restore"] = str(backend.ctl)
    backend.apply("chef.backend")
    rules = backend.path("etc/iptables/rules.v4")
    assert f"{backend.ctl} {rules}" in backend.ctl_runs()
    again = backend.apply("chef.backend")
    assert again["chef-backend-iptables-restore"].changes == {}
    assert len(backend.ctl_runs()) == 2, "one reconfigure, one restore"


# -- frontend ------------------------------------------------------------------------------

FRONTEND_SECRETS = {"postgresql": {"db_superuser_password": "pg-s3cret"}, "redis": {"x": 1}}


@pytest.fixture
def frontend(tmp_path: Path) -> Node:
    node = Node(tmp_path, "frontend", "192.168.1.4", {})
    node.pillar["chef_ha"] = {
        "backends": {"be1": "10.0.0.1"},
        "frontends": {"fe1": "192.168.1.4"},
        "frontend_secrets": FRONTEND_SECRETS,
        "migration_level": {"major": 3, "minor": 14},
        "server_rb": "fqdn 'fe1.example.com'\n",
        "secrets_owner": ME,
        "server_ctl": str(node.ctl),
        "preflight": EASY_PREFLIGHT,
    }
    return node


def test_frontend_writes_files_and_reconfigures_once(frontend: Node) -> None:
    results = frontend.apply("chef.frontend")
    assert failures(results) == {}
    server_rb = frontend.path("etc/opscode/chef-server.rb")
    assert server_rb.read_text() == "fqdn 'fe1.example.com'\n" and mode(server_rb) == 0o640
    secrets = frontend.path("etc/opscode/private-chef-secrets.json")
    assert json.loads(secrets.read_text()) == FRONTEND_SECRETS and mode(secrets) == 0o600
    assert results["chef-server-secrets"].changes["diff"] == "<sensitive: diff hidden>"
    level = frontend.path("var/opt/opscode/upgrades/migration-level")
    assert level.read_text() == '{"major": 3, "minor": 14}\n'
    assert frontend.path("var/opt/opscode/bootstrapped").is_file()
    assert frontend.ctl_runs() == [f"{frontend.ctl} reconfigure"]
    assert not list(frontend.root.rglob("*.saline-bak")), "no copies of secrets left behind"

    again = frontend.apply("chef.frontend")
    assert {k: r.changes for k, r in again.items() if r.changes} == {}
    assert frontend.ctl_runs() == [f"{frontend.ctl} reconfigure"]

    frontend.pillar["chef_ha"]["migration_level"] = {"major": 3, "minor": 15}
    upgraded = frontend.apply("chef.frontend")
    assert upgraded["chef-server-migration-level"].changes
    assert frontend.ctl_runs() == [f"{frontend.ctl} reconfigure"] * 2


def test_frontend_test_mode_changes_nothing(frontend: Node) -> None:
    before = snapshot(frontend.root)
    results = frontend.apply("chef.frontend", test=True)
    assert snapshot(frontend.root) == before and frontend.ctl_runs() == []
    assert {k for k, r in results.items() if r.result is None} == {
        "chef-server-rb",
        "chef-server-secrets",
        "chef-server-migration-level",
        "chef-server-bootstrapped",
        "chef-server-reconfigure",
    }


def test_frontend_compares_migration_levels_not_bytes(frontend: Node) -> None:
    level = frontend.path("var/opt/opscode/upgrades/migration-level")
    level.parent.mkdir(parents=True)
    # the same level as chef_server.set_migration_level (a runbook) writes it
    frontend.call("chef_server.set_migration_level", 3, 14, str(level))
    written = level.read_bytes()
    results = frontend.apply("chef.frontend")
    assert level.read_bytes() == written
    kept = results["chef-server-migration-level"]
    assert kept.result is True and kept.changes == {}
    assert kept.name == f"migration level 3.14 already in {level}"
    frontend.call("chef_server.set_migration_level", 3, 12, str(level))
    behind = frontend.apply("chef.frontend")
    assert behind["chef-server-migration-level"].changes
    assert frontend.call("chef_server.migration_level", str(level))["minor"] == 14
    assert frontend.ctl_runs() == [f"{frontend.ctl} reconfigure"] * 2


def test_frontend_without_server_rb_never_creates_it(frontend: Node) -> None:
    del frontend.pillar["chef_ha"]["server_rb"]
    results = frontend.apply("chef.frontend")
    server_rb = frontend.path("etc/opscode/chef-server.rb")
    assert results["chef-server-rb"].result is False
    assert results["chef-server-rb"].comment == f"{server_rb} does not exist"
    assert results["chef-server-reconfigure"].comment == ("requisite failed: file:chef-server-rb")
    assert not server_rb.exists() and frontend.ctl_runs() == []


def test_frontend_without_server_rb_keeps_its_content(frontend: Node) -> None:
    del frontend.pillar["chef_ha"]["server_rb"]
    del frontend.pillar["chef_ha"]["migration_level"]
    server_rb = frontend.path("etc/opscode/chef-server.rb")
    server_rb.parent.mkdir(parents=True)
    server_rb.write_text("from gen-server-config\n")
    server_rb.chmod(0o644)
    results = frontend.apply("chef.frontend")
    assert failures(results) == {}
    assert server_rb.read_text() == "from gen-server-config\n" and mode(server_rb) == 0o640
    assert results["chef-server-rb"].changes == {"mode": "0640"}
    assert "chef-server-migration-level" not in results
    assert not frontend.path("var/opt/opscode/upgrades/migration-level").exists()


def test_frontend_secret_text_written_verbatim_and_masked(frontend: Node) -> None:
    text = '{"postgresql": {"db_superuser_password": "t0p-s3cret"}}'
    frontend.pillar["chef_ha"]["frontend_secrets"] = text  # a !secret in pillar is text
    results = frontend.apply("chef.frontend", secrets=frozenset({text}))
    assert frontend.path("etc/opscode/private-chef-secrets.json").read_text() == text
    assert "t0p-s3cret" not in json.dumps([r.model_dump() for r in results.values()])


def test_frontend_refuses_a_bad_migration_level(frontend: Node) -> None:
    frontend.pillar["chef_ha"]["migration_level"] = {"major": "3", "minor": -1}
    results = frontend.apply("chef.frontend")
    assert results["chef-frontend-pillar"].result is False
    assert "chef_ha:migration_level must be {major: int, minor: int}" in (
        results["chef-frontend-pillar"].name
    )
    assert list(frontend.root.iterdir()) == [] and frontend.ctl_runs() == []


# -- preflight and top ---------------------------------------------------------------------


def test_preflight_refusal_stops_the_run(backend: Node) -> None:
    backend.pillar["chef_ha"]["preflight"] = {"cores": 4096, "memory_gb": 1e6, "clock": False}
    results = backend.apply()  # the highstate: top.yaml puts chef.preflight first
    cores = results["chef-preflight-cores"]
    assert cores.result is False
    assert cores.name == f"cores {len(os.sched_getaffinity(0))} < 4096 required for a backend"
    assert results["chef-preflight-memory"].name.endswith(" < 1e+06 GB required for a backend")
    assert results["chef-preflight-disk"].result is True
    gate = results["chef-preflight"]
    assert gate.result is False
    assert gate.comment == (
        "requisite failed: test:chef-preflight-cores, test:chef-preflight-memory"
    )
    assert results["chef-backend-rb"].comment == "not run: failhard after test.nop:chef-preflight"
    assert list(backend.root.iterdir()) == [] and backend.ctl_runs() == []


def test_preflight_passes_without_changes(backend: Node) -> None:
    results = backend.apply("chef.preflight")
    assert [r.id for r in results.values()] == [
        "chef-preflight-cores",
        "chef-preflight-memory",
        "chef-preflight-disk",
        "chef-preflight-storage",
        "chef-preflight",
    ]
    assert all(r.result is True and r.changes == {} for r in results.values())


def test_preflight_bad_settings_fail_compilation(backend: Node) -> None:
    backend.pillar["chef_ha"]["preflight"] = {"memory": 4}
    with pytest.raises(StateError, match="unknown preflight setting 'memory'"):
        backend.compile(["chef.preflight"])
    backend.grains["role"] = "database"
    backend.pillar["chef_ha"]["preflight"] = {}
    with pytest.raises(StateError, match="unknown Chef HA role 'database'"):
        backend.compile(["chef.preflight"])


@pytest.mark.parametrize("role", ["backend", "frontend"])
def test_top_maps_roles_to_states(backend: Node, role: str) -> None:
    backend.grains["role"] = role
    sls = list(dict.fromkeys(c.sls for c in backend.compile(None)))
    assert sls == ["chef.preflight", f"chef.{role}"]
    backend.grains["role"] = "web"
    assert backend.compile(None) == []


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    return case


@pytest.mark.parametrize("path", sorted((CASES / "preflight").glob("*.yaml")), ids=lambda p: p.stem)
def test_preflight_verdicts(path: Path) -> None:
    case = load_case(path)
    raw = case["facts"]
    facts = preflight.Facts(
        cores=raw["cores"],
        memory_bytes=raw["memory_bytes"],
        disk_path=raw["disk_path"],
        disk_free_bytes=raw["disk_free_bytes"],
        mount=preflight.Mount(**raw["mount"]) if raw["mount"] else None,
        clock=preflight.Clock(**raw["clock"]) if raw["clock"] else None,
    )
    need = preflight.requirement_for(case["role"], case.get("overrides"))
    verdicts = preflight.evaluate(case["role"], facts, need, case.get("managed_nodes", 0))
    assert [[v.name, v.ok, v.message] for v in verdicts] == case["verdicts"]


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
server:/export /var/opt nfs4 rw,vers=4.2 0 0
/dev/vdb /var/opt/chef-backend xfs rw 0 0
host:/x /var/opt/chef-backend/with\\040space fuse.sshfs rw 0 0
/dev/vdc /var/opt/chef-backend-old ext4 rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "point", "fstype"),
    [
        ("/var/opt/chef-backend/PostgreSQL", "/var/opt/chef-backend", "xfs"),
        ("/var/opt/opscode", "/var/opt", "nfs4"),
        ("/var/opt/chef-backend/with space/data", "/var/opt/chef-backend/with space", "fuse.sshfs"),
        ("/var/opt/chef-backend-older", "/var/opt", "nfs4"),  # a prefix is not a parent
        ("/etc", "/", "ext4"),
    ],
)
def test_mount_of_takes_the_longest_parent(path: str, point: str, fstype: str) -> None:
    assert preflight.mount_of(path, preflight.parse_mounts(MOUNTS)) == preflight.Mount(
        point, fstype
    )


def test_existing_lists_only_present_paths(tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.write_text("")
    gone = tmp_path / "gone"
    assert preflight.existing(None, str(gone), str(there)) == [str(there)]  # type: ignore[arg-type]
