"""The lab's chef-server-ctl and chef-backend-ctl shims, on files (no services needed)."""

import json
from pathlib import Path

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
    nodes = {
        name: {"name": name, "address": f"127.0.1.{i}", "root": str(tmp_path / name),
               "role": "backend" if name.startswith("be") else "frontend", "services": {}}
        for i, name in enumerate(("be1", "be2", "fe1"), 1)
    }  # fmt: skip
    save(tmp_path, {"leader": "be1", "subnet": "127.0.1", "nodes": nodes})
    return tmp_path


@pytest.mark.parametrize(
    ("kind", "node", "why"),
    [
        ("bogus", "be2", "unknown fault 'bogus' (one of: pg-stop,"),
        ("pg-stop", "be1", "be1 is the PostgreSQL leader: lab faults break followers"),
        ("pg-pause-replay", "fe1", "fe1 is a frontend: PostgreSQL faults need a backend"),
        ("migration-drift", "be2", "be2 is a backend: migration faults need a frontend"),
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
