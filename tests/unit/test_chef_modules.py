"""chef_backend.* and chef_server.*: the status parser's golden cases, and every function run
against a fake ``*-ctl`` tool (a script in tmp_path that records its argv)."""

import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minion.channel import ChannelError
from minion.config import MinionConfig
from minion.executor import call_function
from minion.modules import REGISTRY, chef_backend, chef_server
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from saline.protocol import Job

CASES = Path(__file__).resolve().parent.parent / "cases" / "chef"
STATUS_CASES = sorted(CASES.glob("status_*.txt"))
REFERENCE_STATUS = (CASES / "status_reference.txt").read_text()

FAKE_TOOL = """\
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
sys.stdout.write(os.environ.get("FAKE_STDOUT", ""))
sys.stderr.write(os.environ.get("FAKE_STDERR", ""))
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    config = MinionConfig(id="m1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
    provider = SupervisorProvider(config.services, config.cachedir / "services")
    yield Context(minion_id="m1", config=config, grains={"id": "m1"}, services=provider)


class FakeTool:
    """A fake chef-*-ctl: prints what it is told, records each invocation's argv."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_var: str) -> None:
        self.path = tmp_path / "fake-ctl"
        self.path.write_text(f"#!{sys.executable}\n{FAKE_TOOL}")
        self.path.chmod(0o755)
        self.log = tmp_path / "fake-ctl.log"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv(env_var, str(self.path))
        monkeypatch.setenv("FAKE_LOG", str(self.log))

    def respond(self, stdout: str = "", stderr: str = "", rc: int = 0) -> None:
        self.monkeypatch.setenv("FAKE_STDOUT", stdout)
        self.monkeypatch.setenv("FAKE_STDERR", stderr)
        self.monkeypatch.setenv("FAKE_RC", str(rc))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def backend_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTool:
    return FakeTool(tmp_path, monkeypatch, chef_backend.TOOL_ENV)


@pytest.fixture
def server_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTool:
    return FakeTool(tmp_path, monkeypatch, chef_server.TOOL_ENV)


# --- chef_backend: status parser golden cases ------------------------------------------------


def test_status_cases_exist() -> None:
    assert len(STATUS_CASES) >= 6
    for raw in STATUS_CASES:
        assert raw.with_suffix(".json").exists(), raw


@pytest.mark.parametrize("raw", STATUS_CASES, ids=[p.stem for p in STATUS_CASES])
def test_parse_status_golden(raw: Path) -> None:
    expected: dict[str, Any] = json.loads(raw.with_suffix(".json").read_text())
    if "error_contains" in expected:
        with pytest.raises(ExecutionError) as info:
            chef_backend.parse_status(raw.read_text())
        assert expected["error_contains"] in str(info.value)
    else:
        assert chef_backend.parse_status(raw.read_text()) == expected


def test_parse_status_reference_values() -> None:
    parsed = chef_backend.parse_status(REFERENCE_STATUS)
    assert parsed["healthy"] is True
    assert parsed["problems"] == []
    es = parsed["services"]["elasticsearch"]
    assert es["pid"] == 6661
    assert es["seconds"] == 86400 + 5 * 3600 + 59 * 60 + 41
    assert es["distributed"] == {"state": "green", "nodes_online": "3/3"}
    assert parsed["services"]["etcd"]["distributed"] == {"health": "green", "healthy_nodes": "3/3"}
    assert parsed["services"]["leaderl"]["distributed"] == {
        "leader": 1,
        "waiting": 0,
        "follower": 2,
        "total": 3,
    }


def test_parse_status_broken_leaderl_is_unhealthy() -> None:
    parsed = chef_backend.parse_status((CASES / "status_leaderl_broken.txt").read_text())
    assert parsed["healthy"] is False
    assert parsed["services"]["leaderl"]["healthy"] is False
    assert parsed["services"]["postgresql"]["healthy"] is True
    assert "leaderl: waiting is 3, want 0" in parsed["problems"]


def test_parse_status_down_service() -> None:
    parsed = chef_backend.parse_status((CASES / "status_postgresql_down.txt").read_text())
    pg = parsed["services"]["postgresql"]
    assert (pg["local"], pg["pid"], pg["healthy"]) == ("down", None, False)
    assert "postgresql: local status down" in parsed["problems"]


@pytest.mark.parametrize("text", ["", "   \n\n", "total garbage\nmore"])
def test_parse_status_rejects_garbage(text: str) -> None:
    with pytest.raises(ExecutionError):
        chef_backend.parse_status(text)


def test_parse_status_header_only_is_an_error() -> None:
    header = REFERENCE_STATUS.splitlines()[0]
    with pytest.raises(ExecutionError, match="no services"):
        chef_backend.parse_status(header + "\n")


def test_parse_status_duplicate_service() -> None:
    lines = REFERENCE_STATUS.splitlines()
    with pytest.raises(ExecutionError, match="listed twice"):
        chef_backend.parse_status("\n".join([*lines, lines[1]]))


# --- chef_backend: functions against the fake tool --------------------------------------------


def test_status_runs_tool(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stdout=REFERENCE_STATUS)
    result = chef_backend.status(ctx)
    assert result["healthy"] is True
    assert set(result["services"]) == set(chef_backend.EXPECTED_SERVICES)
    assert backend_tool.calls() == [["status"]]


def test_status_nonzero_exit_with_table_still_parses(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stdout=(CASES / "status_postgresql_down.txt").read_text(), rc=1)
    assert chef_backend.status(ctx)["healthy"] is False


def test_status_failure_reports_stderr(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stderr="cannot connect to leaderl\n", rc=3)
    with pytest.raises(ExecutionError, match=r"exited 3: cannot connect to leaderl"):
        chef_backend.status(ctx)


def test_status_garbage_names_line(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stdout=(CASES / "status_garbage.txt").read_text())
    with pytest.raises(ExecutionError, match="Segmentation fault"):
        chef_backend.status(ctx)


def test_tool_missing(ctx: Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(chef_backend.TOOL_ENV, str(tmp_path / "nope"))
    with pytest.raises(ExecutionError, match="command not found"):
        chef_backend.reconfigure(ctx)


def test_cluster_status_json(ctx: Context, backend_tool: FakeTool) -> None:
    doc = {"nodes": [{"name": "be1", "role": "leader"}], "healthy": True}
    backend_tool.respond(stdout=json.dumps(doc))
    assert chef_backend.cluster_status(ctx) == doc
    assert backend_tool.calls() == [["cluster-status", "--json"]]


def test_cluster_status_bad_json(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stdout="not json")
    with pytest.raises(ExecutionError, match="invalid JSON"):
        chef_backend.cluster_status(ctx)


def test_backend_reconfigure_outcome(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stdout="done\n", stderr="warn\n", rc=2)
    outcome = chef_backend.reconfigure(ctx)
    assert outcome == Outcome({"stdout": "done\n", "stderr": "warn\n", "retcode": 2}, 2)
    assert backend_tool.calls() == [["reconfigure"]]


@pytest.mark.parametrize(
    ("leader", "force", "argv"),
    [
        ("10.0.0.1", False, ["pgsql-follow", "10.0.0.1"]),
        ("be1.example.com", True, ["pgsql-follow", "--force-basebackup", "be1.example.com"]),
        ("fd00::1", "true", ["pgsql-follow", "--force-basebackup", "fd00::1"]),
        ("be2", "false", ["pgsql-follow", "be2"]),
    ],
)
def test_pgsql_follow_argv(
    ctx: Context, backend_tool: FakeTool, leader: str, force: Any, argv: list[str]
) -> None:
    assert chef_backend.pgsql_follow(ctx, leader, force_basebackup=force).retcode == 0
    assert backend_tool.calls() == [argv]


@pytest.mark.parametrize(
    "leader",
    [
        "",
        "--force-basebackup",
        "-x",
        "10.0.0.256",
        "be1;rm -rf /",
        "be 1",
        "be1/x",
        "a..b",
        "x" * 64,
        None,
        5,
    ],
)
def test_pgsql_follow_refuses_bad_leader(ctx: Context, backend_tool: FakeTool, leader: Any) -> None:
    with pytest.raises(ExecutionError, match="leader must be an IP address or a hostname"):
        chef_backend.pgsql_follow(ctx, leader)
    assert backend_tool.calls() == []


def test_pgsql_follow_bad_bool(ctx: Context, backend_tool: FakeTool) -> None:
    with pytest.raises(ExecutionError, match="force_basebackup"):
        chef_backend.pgsql_follow(ctx, "be1", force_basebackup="maybe")
    assert backend_tool.calls() == []


def test_gen_server_config(ctx: Context, backend_tool: FakeTool) -> None:
    chef_backend.gen_server_config(ctx, "fe1.example.com", "/tmp/chef-server.rb.FE1")
    assert backend_tool.calls() == [
        ["gen-server-config", "fe1.example.com", "-f", "/tmp/chef-server.rb.FE1"]
    ]


@pytest.mark.parametrize(
    ("fqdn", "path"),
    [
        ("10.0.0.1.", "/tmp/x"),
        ("-f", "/tmp/x"),
        ("fe_1.example", "/tmp/x"),
        ("fe1", "-rf"),
        ("fe1", ""),
        ("10.0.0.1", "/tmp/x"),
    ],
)
def test_gen_server_config_refuses(
    ctx: Context, backend_tool: FakeTool, fqdn: str, path: str
) -> None:
    with pytest.raises(ExecutionError):
        chef_backend.gen_server_config(ctx, fqdn, path)
    assert backend_tool.calls() == []


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
@pytest.mark.parametrize("service", sorted(chef_backend.SERVICES))
def test_service_actions_argv(
    ctx: Context, backend_tool: FakeTool, action: str, service: str
) -> None:
    outcome = getattr(chef_backend, action)(ctx, service)
    assert outcome.retcode == 0
    assert backend_tool.calls() == [[action, service]]


@pytest.mark.parametrize(
    "service", ["nginx", "", "--all", "postgresql;reboot", "PostgreSQL", " etcd", None, 5]
)
@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_service_actions_refuse_unknown_service(
    ctx: Context, backend_tool: FakeTool, action: str, service: Any
) -> None:
    with pytest.raises(ExecutionError, match="service must be one of elasticsearch, epmd, etcd"):
        getattr(chef_backend, action)(ctx, service)
    assert backend_tool.calls() == []


def test_service_action_failure_is_the_outcome(ctx: Context, backend_tool: FakeTool) -> None:
    backend_tool.respond(stderr="fail: leaderl\n", rc=1)
    outcome = chef_backend.restart(ctx, "leaderl")
    assert outcome == Outcome({"stdout": "", "stderr": "fail: leaderl\n", "retcode": 1}, 1)


def test_create_cluster_argv(ctx: Context, backend_tool: FakeTool) -> None:
    assert chef_backend.create_cluster(ctx).retcode == 0
    assert backend_tool.calls() == [["create-cluster", "--accept-license", "--yes"]]


@pytest.mark.parametrize("leader", ["10.0.0.1", "be1.example.com", "fd00::1", "be1"])
def test_join_cluster_argv(ctx: Context, backend_tool: FakeTool, leader: str) -> None:
    secrets = "/home/ops/chef-backend-secrets.json"
    assert chef_backend.join_cluster(ctx, leader, secrets).retcode == 0
    assert backend_tool.calls() == [
        ["join-cluster", leader, "-s", secrets, "--accept-license", "--yes"]
    ]


@pytest.mark.parametrize("leader", ["", "-s", "--yes", "10.0.0.256", "be1;id", "be 1", None])
def test_join_cluster_refuses_bad_leader(ctx: Context, backend_tool: FakeTool, leader: Any) -> None:
    with pytest.raises(ExecutionError, match="leader must be an IP address or a hostname"):
        chef_backend.join_cluster(ctx, leader, "/root/chef-backend-secrets.json")
    assert backend_tool.calls() == []


@pytest.mark.parametrize(
    "secrets", ["", "chef-backend-secrets.json", "-s", "--yes", "/root/a\0b", None, 3]
)
def test_join_cluster_refuses_bad_secrets(
    ctx: Context, backend_tool: FakeTool, secrets: Any
) -> None:
    with pytest.raises(ExecutionError, match="secrets must be an absolute file path"):
        chef_backend.join_cluster(ctx, "10.0.0.1", secrets)
    assert backend_tool.calls() == []


def test_backend_functions_table() -> None:
    assert set(chef_backend.FUNCTIONS) == {
        "status",
        "cluster_status",
        "reconfigure",
        "pgsql_follow",
        "reclone",
        "gen_server_config",
        "start",
        "stop",
        "restart",
        "create_cluster",
        "join_cluster",
        "install_from_pillar",
        "pillar_matches",
    }
    # one implementation, reachable from either role's module
    assert chef_backend.FUNCTIONS["install_from_pillar"] is chef_server.install_from_pillar
    assert REGISTRY["chef_backend.join_cluster"] is chef_backend.join_cluster
    for fn in chef_backend.FUNCTIONS.values():
        assert fn.__doc__ and fn.__doc__.strip()


# --- chef_server: migration level ---------------------------------------------------------------


def test_migration_level_missing(ctx: Context, tmp_path: Path) -> None:
    result = chef_server.migration_level(ctx, str(tmp_path / "migration-level"))
    assert result == {"major": None, "minor": None, "sha256": None, "exists": False}


def test_migration_level_read(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "migration-level"
    path.write_bytes(b'{"major":1,"minor":48}')
    result = chef_server.migration_level(ctx, str(path))
    assert result["exists"] is True
    assert (result["major"], result["minor"]) == (1, 48)
    assert result["sha256"] == hashlib.sha256(b'{"major":1,"minor":48}').hexdigest()


@pytest.mark.parametrize(
    "content",
    [
        b"garbage",
        b"[1, 2]",
        b'{"major": 1}',
        b'{"major": -1, "minor": 0}',
        b'{"major": true, "minor": 0}',
    ],
)
def test_migration_level_garbage(ctx: Context, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "migration-level"
    path.write_bytes(content)
    with pytest.raises(ExecutionError, match=f"cannot parse migration level file {path}"):
        chef_server.migration_level(ctx, str(path))


def _level_under_root(ctx: Context, root: Path) -> Path:
    """The reference's migration-level path under ``root``, made the node's chef_root."""
    ctx.grains["chef_root"] = str(root)
    return root / chef_server.MIGRATION_LEVEL_PATH.lstrip("/")


def test_set_migration_level_writes_atomically(ctx: Context, tmp_path: Path) -> None:
    path = _level_under_root(ctx, tmp_path)
    result = chef_server.set_migration_level(ctx, 1, "49", str(path))
    assert result["changed"] is True
    assert json.loads(path.read_text()) == {"major": 1, "minor": 49}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["migration-level"]  # no temp file left behind
    assert chef_server.migration_level(ctx, str(path)) == {
        k: v for k, v in result.items() if k != "changed"
    }


def test_set_migration_level_noop_keeps_file(ctx: Context, tmp_path: Path) -> None:
    path = _level_under_root(ctx, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"major": 1, "minor": 49}')
    inode = path.stat().st_ino
    result = chef_server.set_migration_level(ctx, 1, 49, str(path))
    assert result["changed"] is False
    assert path.stat().st_ino == inode
    assert path.read_text() == '{"major": 1, "minor": 49}'


def test_set_migration_level_replaces_garbage(ctx: Context, tmp_path: Path) -> None:
    path = _level_under_root(ctx, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("garbage")
    assert chef_server.set_migration_level(ctx, 2, 0, str(path))["changed"] is True
    assert chef_server.migration_level(ctx, str(path))["major"] == 2


def test_set_migration_level_writes_no_other_path(ctx: Context, tmp_path: Path) -> None:
    reference = _level_under_root(ctx, tmp_path / "root")
    for elsewhere in (tmp_path / "migration-level", reference.parent / ".." / "x" / "y"):
        with pytest.raises(ExecutionError, match=r"writes only .*under grain chef_root"):
            chef_server.set_migration_level(ctx, 1, 2, str(elsewhere))
        assert not elsewhere.exists()
    assert chef_server.set_migration_level(ctx, 1, 2, str(reference))["changed"] is True


@pytest.mark.parametrize(("major", "minor"), [(-1, 0), (1, "x"), (True, 0), (1, 1.5)])
def test_set_migration_level_rejects(ctx: Context, tmp_path: Path, major: Any, minor: Any) -> None:
    path = _level_under_root(ctx, tmp_path)
    with pytest.raises(ExecutionError, match="must be a non-negative integer"):
        chef_server.set_migration_level(ctx, major, minor, str(path))
    assert not path.exists()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({"major": 1, "minor": 48}, {"major": 1, "minor": 48}, 0),
        ({"major": 1, "minor": 9}, {"major": 1, "minor": 48}, -1),
        ({"major": 2, "minor": 0}, {"major": 1, "minor": 48}, 1),
        ({"major": 1, "minor": 48, "sha256": "x", "exists": True}, {"major": 0, "minor": 99}, 1),
    ],
)
def test_compare_migration_levels(a: dict[str, Any], b: dict[str, Any], expected: int) -> None:
    assert chef_server.compare_migration_levels(a, b) == expected
    assert chef_server.compare_migration_levels(b, a) == -expected


def test_compare_migration_levels_missing() -> None:
    missing = {"major": None, "minor": None, "sha256": None, "exists": False}
    with pytest.raises(ExecutionError, match="major"):
        chef_server.compare_migration_levels(missing, {"major": 1, "minor": 0})


# --- chef_server: tool commands and validation -------------------------------------------------


def test_server_reconfigure(ctx: Context, server_tool: FakeTool) -> None:
    server_tool.respond(stdout="Chef Infra Server Reconfigured!\n")
    outcome = chef_server.reconfigure(ctx)
    assert outcome.retcode == 0
    assert outcome.value["stdout"] == "Chef Infra Server Reconfigured!\n"
    assert server_tool.calls() == [["reconfigure"]]


SERVER_STATUS = """\
run: bookshelf: (pid 1201) 86400s; run: log: (pid 1200) 86400s
run: nginx: (pid 1301) 86400s; run: log: (pid 1300) 86400s
down: opscode-erchef: 3s, normally up; run: log: (pid 1400) 86400s
fail: oc_bifrost: 12s, normally up, want up; run: log: (pid 1500) 86400s
"""


def test_server_status_parses_runit_lines(ctx: Context, server_tool: FakeTool) -> None:
    server_tool.respond(stdout=SERVER_STATUS, rc=3)  # omnibus-ctl: 3 when one is down
    result = chef_server.status(ctx)
    assert server_tool.calls() == [["status"]]
    assert result["services"]["nginx"] == {
        "state": "run", "pid": 1301, "seconds": 86400, "normally_up": False,
    }  # fmt: skip
    assert result["services"]["opscode-erchef"] == {
        "state": "down", "pid": None, "seconds": 3, "normally_up": True,
    }  # fmt: skip
    assert result["healthy"] is False
    assert result["problems"] == [
        "opscode-erchef: down for 3s, normally up",
        "oc_bifrost: fail for 12s, normally up",
    ]


@pytest.mark.parametrize(
    ("stdout", "stderr", "message"),
    [
        ("", "boom\n", "chef-server-ctl status failed (1): boom"),
        ("Chef Infra Server is fine\n", "", "cannot parse line 'Chef Infra Server is fine'"),
    ],
)
def test_server_status_refuses_what_it_cannot_read(
    ctx: Context, server_tool: FakeTool, stdout: str, stderr: str, message: str
) -> None:
    server_tool.respond(stdout=stdout, stderr=stderr, rc=1)
    with pytest.raises(ExecutionError, match=re.escape(message)):
        chef_server.status(ctx)


def test_server_restart_checks_the_service_name(ctx: Context, server_tool: FakeTool) -> None:
    server_tool.respond(stdout="ok: run: opscode-erchef\n")
    assert chef_server.restart(ctx, "opscode-erchef").retcode == 0
    for bad in ("-f", "nginx; reboot", "../x", "", 3):
        with pytest.raises(ExecutionError, match="service must be a service name"):
            chef_server.restart(ctx, bad)  # type: ignore[arg-type]
    assert server_tool.calls() == [["restart", "opscode-erchef"]]


def test_server_upgrade(ctx: Context, server_tool: FakeTool) -> None:
    server_tool.respond(stdout="Chef Infra Server Upgraded!\n")
    outcome = chef_server.upgrade(ctx)
    assert outcome.retcode == 0 and outcome.value["stdout"] == "Chef Infra Server Upgraded!\n"
    assert server_tool.calls() == [["upgrade"]]


def test_server_upgrade_failure_fails_the_job(ctx: Context, server_tool: FakeTool) -> None:
    # A non-zero exit is returned as the Outcome's retcode; the executor makes that a failure.
    server_tool.respond(stderr="migration 1.49 failed\n", rc=1)
    ctx.functions = REGISTRY
    success, retcode, ret = call_function(ctx, Job(jid="j1", fun="chef_server.upgrade"))
    assert (success, retcode) == (False, 1)
    assert ret["stderr"] == "migration 1.49 failed\n"
    assert server_tool.calls() == [["upgrade"]]


VALID_SHORT = ["4thcoffee", "a", "0", "my-org_2", "a" * 255, "z" + "-" * 254]
INVALID_SHORT = [
    "",
    "a" * 256,
    "Fourth",
    "4thCoffee",
    "-org",
    "_org",
    "my.org",
    " org",
    "org ",
    "ørg",
]
VALID_FULL = ["Fourth Coffee, Inc.", "x", "x" * 1023, "Ünïcode Org", "a  b\t"]
INVALID_FULL = ["", "x" * 1024, " Fourth", "\tFourth", "\nx", "-x"]


@pytest.mark.parametrize("name", VALID_SHORT)
def test_org_create_valid_short_name(ctx: Context, server_tool: FakeTool, name: str) -> None:
    chef_server.org_create(ctx, name, "Fourth Coffee, Inc.")
    assert server_tool.calls() == [["org-create", name, "Fourth Coffee, Inc."]]


@pytest.mark.parametrize("name", INVALID_SHORT)
def test_org_create_invalid_short_name(ctx: Context, server_tool: FakeTool, name: str) -> None:
    with pytest.raises(ExecutionError, match="short_name must begin with a lower-case letter"):
        chef_server.org_create(ctx, name, "Fourth Coffee, Inc.")
    assert server_tool.calls() == []


@pytest.mark.parametrize("full", VALID_FULL)
def test_org_create_valid_full_name(ctx: Context, server_tool: FakeTool, full: str) -> None:
    chef_server.org_create(ctx, "4thcoffee", full)
    assert server_tool.calls() == [["org-create", "4thcoffee", full]]


@pytest.mark.parametrize("full", INVALID_FULL)
def test_org_create_invalid_full_name(ctx: Context, server_tool: FakeTool, full: str) -> None:
    with pytest.raises(ExecutionError, match="full_name must begin with a non-white-space"):
        chef_server.org_create(ctx, "4thcoffee", full)
    assert server_tool.calls() == []


def test_org_create_reference_example(ctx: Context, server_tool: FakeTool) -> None:
    outcome = chef_server.org_create(
        ctx, "4thcoffee", "Fourth Coffee, Inc.", "janedoe", "/path/to/4thcoffee-validator.pem"
    )
    argv = ["org-create", "4thcoffee", "Fourth Coffee, Inc.", "--association_user", "janedoe"]
    argv += ["--filename", "/path/to/4thcoffee-validator.pem"]
    assert server_tool.calls() == [argv]
    assert outcome.value["argv"][1:] == argv


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"association_user": "JaneDoe"}, "association_user"),
        ({"filename": "relative.pem"}, "filename"),
        ({"filename": "--help"}, "filename"),
    ],
)
def test_org_create_invalid_options(
    ctx: Context, server_tool: FakeTool, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ExecutionError, match=f"invalid {field}"):
        chef_server.org_create(ctx, "4thcoffee", "Fourth Coffee", **kwargs)
    assert server_tool.calls() == []


USER: dict[str, Any] = {
    "username": "janedoe",
    "first_name": "Jane",
    "last_name": "Doe",
    "email": "janedoe@example.com",
    "password": "abc123",
    "filename": "/path/to/janedoe.pem",
}


def test_user_create_argv_and_password_masked(ctx: Context, server_tool: FakeTool) -> None:
    server_tool.respond(stdout="created janedoe with abc123\n", stderr="echo: abc123\n")
    outcome = chef_server.user_create(ctx, **USER)
    assert server_tool.calls() == [
        [
            *("user-create", "janedoe", "Jane", "Doe", "janedoe@example.com", "abc123"),
            *("--filename", "/path/to/janedoe.pem"),
        ]
    ]
    assert outcome.retcode == 0
    assert "abc123" not in json.dumps(outcome.value)
    assert outcome.value["argv"][-3] == chef_server.MASK
    assert outcome.value["stdout"] == f"created janedoe with {chef_server.MASK}\n"
    assert outcome.value["stderr"] == f"echo: {chef_server.MASK}\n"


def test_user_create_failure_keeps_password_masked(ctx: Context, server_tool: FakeTool) -> None:
    server_tool.respond(stderr="409 conflict for abc123\n", rc=1)
    outcome = chef_server.user_create(ctx, **USER)
    assert outcome.retcode == 1
    assert "abc123" not in json.dumps(outcome.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "JaneDoe"),
        ("username", "jane.doe"),
        ("username", ""),
        ("username", "j" * 256),
        ("first_name", " Jane"),
        ("first_name", ""),
        ("last_name", "D" * 1024),
        ("email", "janedoe"),
        ("email", "jane@doe"),
        ("email", "jane doe@example.com"),
        ("email", "@example.com"),
        ("email", "--filename=/x@a.b"),  # would reach the argv as an option
        ("email", "-x@example.com"),
        ("email", "a@-example.com"),
        ("password", ""),
        ("password", "-abc123"),
        ("filename", "janedoe.pem"),
    ],
)
def test_user_create_invalid(ctx: Context, server_tool: FakeTool, field: str, value: str) -> None:
    with pytest.raises(ExecutionError, match=f"invalid {field}") as info:
        chef_server.user_create(ctx, **{**USER, field: value})
    assert server_tool.calls() == []
    assert "abc123" not in str(info.value)


def test_user_create_boundaries(ctx: Context, server_tool: FakeTool) -> None:
    chef_server.user_create(ctx, **{**USER, "username": "j" * 255, "last_name": "D" * 1023})
    assert server_tool.calls()[0][1] == "j" * 255


def test_server_functions_table() -> None:
    assert set(chef_server.FUNCTIONS) == {
        "reconfigure",
        "migration_level",
        "set_migration_level",
        "user_create",
        "org_create",
        "upgrade",
        "status",
        "restart",
        "install_from_pillar",
        "pillar_matches",
    }
    for fn in chef_server.FUNCTIONS.values():
        assert fn.__doc__ and fn.__doc__.strip()


# --- files handed over through the pillar -------------------------------------------------------

SECRETS = '{"postgresql": {"db_superuser_password": "s3cr3t-pw"}}\n'


class FakeChannel:
    """This minion's line to the master: answers ``pillar`` with a fixed pillar."""

    def __init__(self, pillar: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.pillar = pillar or {}
        self.error = error
        self.requests: list[str] = []

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.requests.append(op)
        if self.error is not None:
            raise ChannelError(self.error)
        return {"pillar": self.pillar, "secrets": []}


@pytest.fixture
def pillar_ctx(ctx: Context) -> Context:
    ctx.channel = FakeChannel({"chef": {"backend_secrets": SECRETS, "count": 3}})
    return ctx


def test_install_from_pillar_writes_private_file(pillar_ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "copy" / "chef-backend-secrets.json"
    result = chef_server.install_from_pillar(pillar_ctx, str(path), "chef:backend_secrets")
    assert path.read_text() == SECRETS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["chef-backend-secrets.json"]  # no temp file left
    assert result == {
        "path": str(path),
        "key": "chef:backend_secrets",
        "sha256": hashlib.sha256(SECRETS.encode()).hexdigest(),
        "bytes": len(SECRETS),
        "changed": True,
    }
    assert "s3cr3t" not in json.dumps(result)


def test_install_from_pillar_noop_keeps_file(pillar_ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    chef_server.install_from_pillar(pillar_ctx, str(path), "chef:backend_secrets")
    inode = path.stat().st_ino
    again = chef_server.install_from_pillar(pillar_ctx, str(path), "chef:backend_secrets")
    assert again["changed"] is False and path.stat().st_ino == inode
    changed = chef_server.install_from_pillar(
        pillar_ctx, str(path), "chef:backend_secrets", mode="0640"
    )
    assert changed["changed"] is True and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_install_from_pillar_replaces_other_content(pillar_ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text("stale")
    assert chef_server.install_from_pillar(pillar_ctx, str(path), "chef:backend_secrets")["changed"]
    assert path.read_text() == SECRETS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "chef:nope"}, "no pillar key chef:nope on m1: publish the file there first"),
        ({"key": "chef:backend_secrets:x"}, "no pillar key chef:backend_secrets:x"),
        ({"key": "chef:count"}, "pillar key chef:count must hold a file's text, not int"),
        ({"key": "chef"}, "pillar key chef must hold a file's text, not dict"),
        ({"key": "chef::x"}, "invalid key"),
        ({"key": ""}, "invalid key"),
        ({"path": "relative.json"}, "invalid path"),
        ({"mode": "rw"}, "invalid mode"),
        ({"mode": "01777"}, "invalid mode"),
    ],
)
def test_install_from_pillar_refuses(
    pillar_ctx: Context, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    args = {"path": str(tmp_path / "out.json"), "key": "chef:backend_secrets", **kwargs}
    with pytest.raises(ExecutionError, match=message) as info:
        chef_server.install_from_pillar(pillar_ctx, **args)
    assert "s3cr3t" not in str(info.value)
    assert not (tmp_path / "out.json").exists()


def test_install_from_pillar_needs_the_master(ctx: Context, tmp_path: Path) -> None:
    with pytest.raises(ExecutionError, match="needs the master"):
        chef_server.install_from_pillar(ctx, str(tmp_path / "x"), "chef:backend_secrets")
    ctx.channel = FakeChannel(error="no answer from the master for pillar")
    with pytest.raises(ExecutionError, match="cannot get pillar: no answer"):
        chef_server.install_from_pillar(ctx, str(tmp_path / "x"), "chef:backend_secrets")


@pytest.mark.parametrize(
    ("content", "key", "matches", "reason"),
    [
        (SECRETS, "chef:backend_secrets", True, "pillar key chef:backend_secrets holds"),
        (SECRETS.rstrip("\n"), "chef:backend_secrets", True, "holds"),  # final newline aside
        (SECRETS + "\n", "chef:backend_secrets", True, "holds"),
        ('{"postgresql": {}}\n', "chef:backend_secrets", False, "differs from"),
        (None, "chef:backend_secrets", False, "no file"),
        (SECRETS, "chef:other", False, "no pillar key chef:other on m1"),
    ],
)
def test_pillar_matches(
    pillar_ctx: Context,
    tmp_path: Path,
    content: str | None,
    key: str,
    matches: bool,
    reason: str,
) -> None:
    path = tmp_path / "chef-backend-secrets.json"
    if content is not None:
        path.write_text(content)
    result = chef_backend.FUNCTIONS["pillar_matches"](pillar_ctx, str(path), key)
    assert result["matches"] is matches
    assert reason in result["reason"]
    assert (result["path"], result["key"]) == (str(path), key)
    assert "s3cr3t" not in json.dumps(result)


def test_pillar_matches_refuses_relative_path(pillar_ctx: Context) -> None:
    with pytest.raises(ExecutionError, match="invalid path"):
        chef_server.pillar_matches(pillar_ctx, "secrets.json", "chef:backend_secrets")
