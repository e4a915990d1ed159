"""The lab's chef-server-ctl and chef-backend-ctl shims, on files (no services needed)."""

import json
from pathlib import Path
from typing import Any

import pytest

from minion.modules.chef_backend import parse_status
from saline.lab.chefha import backend_ctl, health, layout, server_ctl
from saline.lab.chefha.state import save


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    root = tmp_path / "nodes" / "fe1"
    layout.write_frontend_files(root, "fe1.lab", ["127.0.1.1"], "pw")
    save(
        tmp_path,
        {
            "target_level": {"major": 3, "minor": 13},
            "nodes": {"fe1": {"name": "fe1", "address": "127.0.1.4", "root": str(root)}},
        },
    )
    return tmp_path


def ctl(lab: Path, *args: str) -> int:
    return server_ctl.main(["--lab", str(lab), "--node", "fe1", *args])


def level_file(lab: Path) -> Path:
    return lab / "nodes/fe1" / layout.MIGRATION_LEVEL


def runs(lab: Path) -> list[str]:
    log = lab / "nodes/fe1/var/log/opscode/reconfigure.log"
    return log.read_text().splitlines() if log.exists() else []


def test_reconfigure_records_each_run(lab: Path) -> None:
    assert ctl(lab, "reconfigure") == 0
    assert ctl(lab, "reconfigure") == 0
    assert [line.split(" ", 1)[1] for line in runs(lab)] == ["reconfigure level=3.12"] * 2


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"major": 3}', "lacks integer major and minor"),
    ],
)
def test_reconfigure_aborts_without_a_usable_migration_level(
    lab: Path, content: str | None, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if content is None:
        level_file(lab).unlink()
    else:
        level_file(lab).write_text(content)
    assert ctl(lab, "reconfigure") == 1
    assert why in capsys.readouterr().err
    assert runs(lab) == []


def test_status_lists_the_frontend_services_and_a_service_down_until_restarted(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minion.modules.chef_server import parse_status
    from saline.lab.chefha import faults

    assert ctl(lab, "status") == 0
    running = parse_status(capsys.readouterr().out)
    assert set(running["services"]) == set(layout.SERVER_SERVICES) and running["healthy"]
    said = faults.fe_service_down({}, {"name": "fe1", "role": "frontend",
                                       "root": str(lab / "nodes/fe1")})  # fmt: skip
    assert "opscode-erchef is down on fe1" in said
    assert ctl(lab, "status") == 3  # omnibus-ctl's exit code when a service is not running
    down = parse_status(capsys.readouterr().out)
    assert down["problems"] == ["opscode-erchef: down for 0s, normally up"]
    assert ctl(lab, "restart", "opscode-erchef") == 0
    capsys.readouterr()
    assert ctl(lab, "status") == 0 and parse_status(capsys.readouterr().out)["healthy"]
    assert ctl(lab, "restart", "no-such-service") == 1
    assert "no service 'no-such-service'" in capsys.readouterr().err


def test_upgrade_raises_the_level_to_the_labs_target(lab: Path) -> None:
    assert ctl(lab, "upgrade") == 0
    assert json.loads(level_file(lab).read_text()) == {"major": 3, "minor": 13}


def test_user_create_never_writes_the_password(lab: Path) -> None:
    key = lab / "janedoe.pem"
    args = ["user-create", "janedoe", "Jane", "Doe", "j@example.com", "s3cret-pw"]
    assert ctl(lab, *args, "--filename", str(key)) == 0
    accounts = (lab / "nodes/fe1/var/log/opscode/accounts.log").read_text()
    assert "janedoe" in accounts and "s3cret-pw" not in accounts
    assert key.stat().st_mode & 0o777 == 0o600


def test_md5_auth_cidr_addresses_are_read_from_chef_backend_rb() -> None:
    rb = layout.backend_rb("10.0.0.1", ["samehost", "samenet", "192.168.1.0/24"])
    assert backend_ctl.cidrs_of(rb) == ["samehost", "samenet", "192.168.1.0/24"]
    assert backend_ctl.cidrs_of("publish_address '10.0.0.1'\n") == ["samehost", "samenet"]


def test_the_status_table_has_the_reference_layout_and_parses() -> None:
    rows = [
        ("elasticsearch", "running (pid 6661)", "1d 5h 59m 41s", "state: green; nodes online: 3/3"),
        ("etcd", "running (pid 6742)", "1d 5h 59m 39s", "health: green; healthy nodes: 3/3"),
        ("leaderl", "running (pid 6788)", "1d 5h 59m 35s",
         "leader: 1; waiting: 0; follower: 2; total: 3"),
        ("postgresql", "running (pid 6640)", "1d 5h 59m 43s",
         "leader: 1; offline: 0; syncing: 0; synced: 2"),
    ]  # fmt: skip
    text = health.status_table(rows)
    # byte for byte the table of the reference document (the parser's golden case)
    assert text == Path("tests/cases/chef/status_reference.txt").read_text()
    assert text.splitlines()[0] == (
        "Service        Local Status        Time in State  Distributed Node Status"
    )
    assert parse_status(text)["healthy"] is True
    assert health.duration(3 * 86400 + 61) == "3d 0h 1m 1s"
    assert health.duration(5) == "5s"


def fake_cluster(tmp_path: Path) -> Path:
    nodes: dict[str, dict[str, Any]] = {
        name: {"name": name, "address": f"127.0.1.{i}", "root": str(tmp_path / name),
               "role": "backend" if name.startswith("be") else "frontend", "services": {}}
        for i, name in enumerate(("be1", "be2", "be3", "fe1"), 1)
    }  # fmt: skip
    save(tmp_path, {"leader": "be1", "subnet": "127.0.1", "nodes": nodes})
    return tmp_path


@pytest.mark.parametrize(
    ("kind", "node", "why"),
    [
        ("bogus", "be2", "unknown fault 'bogus' (one of: pg-stop,"),
        ("pg-stop", "be1", "be1 is the PostgreSQL leader: lab faults break followers"),
        ("pg-pause-replay", "fe1", "fe1 is a frontend: PostgreSQL faults need a backend"),
        ("migration-drift", "be2", "be2 is a backend: this fault needs a frontend"),
        ("etcd-kill", "be9", "no lab node 'be9'"),
    ],
)
def test_faults_refuse_what_they_must_not_break(
    tmp_path: Path, kind: str, node: str, why: str
) -> None:
    from saline.lab.chefha import faults
    from saline.lab.chefha.state import ChefLabError

    lab = fake_cluster(tmp_path)
    with pytest.raises(ChefLabError) as e:
        faults.inject(lab, kind, node)
    assert why in str(e.value)


def backend(lab: Path, *args: str) -> int:
    return backend_ctl.main(["--lab", str(lab), "--node", "be2", *args])


def test_join_cluster_needs_the_shared_secrets_and_records_the_join(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = fake_cluster(tmp_path)
    secrets = tmp_path / "chef-backend-secrets.json"
    assert backend(lab, "join-cluster", "127.0.1.1", "-s", str(secrets), "--yes") == 1
    assert "cannot read shared secrets" in capsys.readouterr().err
    secrets.write_text('{"postgresql": {}}')
    assert backend(lab, "join-cluster", "127.0.1.1", "-s", str(secrets), "--yes") == 0
    assert backend(lab, "create-cluster", "--accept-license", "--yes") == 0
    log = (tmp_path / "be2/var/log/chef-backend/ctl.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in log] == ["join-cluster be1", "create-cluster"]


def test_gen_server_config_writes_a_private_frontend_config(tmp_path: Path) -> None:
    lab = fake_cluster(tmp_path)
    data = json.loads((lab / "chefha.json").read_text())
    data["secrets"] = {"password": "db-pw"}
    save(lab, data)
    out = tmp_path / "chef-server.rb.fe1"
    assert backend(lab, "gen-server-config", "fe1.lab", "-f", str(out)) == 0
    text = out.read_text()
    assert "fqdn 'fe1.lab'" in text and "use_chef_backend true" in text
    assert out.stat().st_mode & 0o777 == 0o640  # it holds the database password


def test_org_create_records_the_org(lab: Path) -> None:
    key = lab / "4thcoffee-validator.pem"
    args = ["org-create", "4thcoffee", "Fourth Coffee, Inc.", "--association_user", "janedoe"]
    assert ctl(lab, *args, "--filename", str(key)) == 0
    accounts = (lab / "nodes/fe1/var/log/opscode/accounts.log").read_text()
    assert "org-create 4thcoffee assoc=janedoe" in accounts
    assert key.stat().st_mode & 0o777 == 0o600
