"""The Chef HA beacons: elasticsearch_health against the stand-in, migration_level on real
files, chef_backend_status with a fake ``chef-backend-ctl``, etcd_health and pg_replication
against endpoints where nothing listens (and their pure state mapping)."""

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from minion.beacons.base import Beacon, BeaconContext
from minion.beacons.chef_backend_status import ChefBackendStatusBeacon
from minion.beacons.elasticsearch_health import ElasticsearchHealthBeacon
from minion.beacons.etcd_health import EtcdHealthBeacon
from minion.beacons.migration_level import MigrationLevelBeacon
from minion.beacons.pg_replication import PgReplicationBeacon
from minion.modules import chef_backend
from minion.services.supervisor import SupervisorProvider
from saline.lab.es_standin import EsStandin

CASES = Path(__file__).resolve().parent.parent / "cases" / "chef"
REFERENCE_STATUS = (CASES / "status_reference.txt").read_text()
DEGRADED_STATUS = (CASES / "status_postgresql_down.txt").read_text()

FAKE_TOOL = """\
import os, sys
sys.stdout.write(os.environ.get("FAKE_STDOUT", ""))
sys.stderr.write(os.environ.get("FAKE_STDERR", ""))
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


@pytest.fixture
def ctx(tmp_path: Path) -> BeaconContext:
    return BeaconContext("m1", SupervisorProvider({}, tmp_path / "svc"))


def make(cls: type[Beacon], ctx: BeaconContext, **params: Any) -> Beacon:
    return cls(cls.Config.model_validate(params), ctx)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "cls",
    [
        PgReplicationBeacon,
        EtcdHealthBeacon,
        ElasticsearchHealthBeacon,
        MigrationLevelBeacon,
        ChefBackendStatusBeacon,
    ],
)
def test_configs_have_defaults_and_forbid_unknown_params(cls: type[Beacon]) -> None:
    assert cls.__doc__ and sys.modules[cls.__module__].__doc__
    cls.Config.model_validate({})
    with pytest.raises(ValidationError, match="Extra inputs"):
        cls.Config.model_validate({"no_such_param": 1})


# -- elasticsearch_health -------------------------------------------------------------------


@pytest.fixture
def es() -> Iterator[tuple[EsStandin, str]]:
    standin = EsStandin()
    host, port = standin.start()
    try:
        yield standin, f"http://{host}:{port}"
    finally:
        standin.stop()


def test_elasticsearch_green_yellow_red(es: tuple[EsStandin, str], ctx: BeaconContext) -> None:
    standin, url = es
    beacon = make(ElasticsearchHealthBeacon, ctx, url=url, timeout=2)
    [green] = beacon.check()
    assert (green.key, green.state, green.bad) == ("cluster", "green", False)
    assert green.data["unassigned_shards"] == 0
    assert green.data["number_of_nodes"] == 3
    assert green.data["client"] == "http"

    standin.set_health("yellow")
    [yellow] = beacon.check()
    assert (yellow.state, yellow.bad) == ("yellow", True)
    assert yellow.data["unassigned_shards"] > 0

    standin.set_health("red")
    [red] = beacon.check()
    assert (red.state, red.bad) == ("red", True)
    assert red.data["unassigned_shards"] > 0


def test_elasticsearch_down(ctx: BeaconContext) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    [obs] = make(ElasticsearchHealthBeacon, ctx, url=url, timeout=2).check()
    assert (obs.state, obs.bad) == ("down", True)
    assert "unreachable" in obs.data["error"]


# -- migration_level ------------------------------------------------------------------------


def test_migration_level_present_changed_missing_invalid(
    tmp_path: Path, ctx: BeaconContext
) -> None:
    path = tmp_path / "migration-level"
    path.write_text(json.dumps({"major": 1, "minor": 20}))
    beacon = make(MigrationLevelBeacon, ctx, path=str(path))

    [first] = beacon.check()
    assert (first.key, first.state, first.bad, first.transient) == (
        "migration_level",
        "present",
        False,
        False,
    )
    assert (first.data["major"], first.data["minor"]) == (1, 20)
    assert len(first.data["sha256"]) == 64

    [again] = beacon.check()
    assert again.state == "present"

    path.write_text(json.dumps({"major": 1, "minor": 21}))
    [changed] = beacon.check()
    assert (changed.state, changed.bad, changed.transient) == ("changed", True, True)
    assert changed.data["minor"] == 21
    assert changed.data["previous_minor"] == 20
    assert changed.data["previous_sha256"] == first.data["sha256"]
    assert changed.data["sha256"] != first.data["sha256"]

    [settled] = beacon.check()
    assert (settled.state, settled.transient) == ("present", False)

    path.unlink()
    [missing] = beacon.check()
    assert (missing.state, missing.bad) == ("missing", True)
    assert missing.data["sha256"] is None

    path.write_text('{"major": "one"}')
    [invalid] = beacon.check()
    assert (invalid.state, invalid.bad) == ("invalid", True)
    assert "major" in invalid.data["error"]

    # back after missing/invalid: a new baseline, not a change
    path.write_text(json.dumps({"major": 2, "minor": 0}))
    [back] = beacon.check()
    assert (back.state, back.data["major"]) == ("present", 2)


def test_migration_level_path_must_be_absolute() -> None:
    with pytest.raises(ValidationError, match="absolute"):
        MigrationLevelBeacon.Config.model_validate({"path": "relative/level"})


# -- chef_backend_status --------------------------------------------------------------------


@pytest.fixture
def backend_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    tool = tmp_path / "fake-chef-backend-ctl"
    tool.write_text(f"#!{sys.executable}\n{FAKE_TOOL}")
    tool.chmod(0o755)
    monkeypatch.setenv(chef_backend.TOOL_ENV, str(tool))
    return monkeypatch


def test_chef_backend_status_reference_is_ok(
    backend_tool: pytest.MonkeyPatch, ctx: BeaconContext
) -> None:
    backend_tool.setenv("FAKE_STDOUT", REFERENCE_STATUS)
    observations = {o.key: o for o in make(ChefBackendStatusBeacon, ctx).check()}
    assert list(observations) == ["elasticsearch", "etcd", "leaderl", "postgresql"]
    for obs in observations.values():
        assert (obs.state, obs.bad, obs.data["problems"]) == ("ok", False, [])
        assert obs.data["local"] == "running"
    assert observations["postgresql"].data["pid"] == 6640
    assert observations["etcd"].data["distributed"]["health"] == "green"


def test_chef_backend_status_degraded(backend_tool: pytest.MonkeyPatch, ctx: BeaconContext) -> None:
    backend_tool.setenv("FAKE_STDOUT", DEGRADED_STATUS)
    backend_tool.setenv("FAKE_RC", "1")
    observations = {o.key: o for o in make(ChefBackendStatusBeacon, ctx).check()}
    pg, es = observations["postgresql"], observations["elasticsearch"]
    assert (pg.state, pg.bad, pg.data["local"], pg.data["pid"]) == ("degraded", True, "down", None)
    assert "postgresql: local status down" in pg.data["problems"]
    assert any("offline" in p for p in pg.data["problems"])
    assert (es.state, es.bad) == ("degraded", True)
    assert es.data["distributed"]["state"] == "yellow"
    assert (observations["etcd"].state, observations["leaderl"].state) == ("ok", "ok")


def test_chef_backend_status_missing_service_and_failed_tool(
    backend_tool: pytest.MonkeyPatch, ctx: BeaconContext
) -> None:
    without_etcd = "\n".join(
        line for line in REFERENCE_STATUS.splitlines() if not line.startswith("etcd")
    )
    backend_tool.setenv("FAKE_STDOUT", without_etcd)
    observations = {o.key: o for o in make(ChefBackendStatusBeacon, ctx).check()}
    assert (observations["etcd"].state, observations["etcd"].bad) == ("degraded", True)
    assert observations["etcd"].data["problems"] == ["etcd: not listed"]
    assert observations["leaderl"].state == "ok"

    backend_tool.setenv("FAKE_STDOUT", "")
    backend_tool.setenv("FAKE_STDERR", "boom")
    backend_tool.setenv("FAKE_RC", "2")
    failed = make(ChefBackendStatusBeacon, ctx).check()
    assert {o.key for o in failed} == set(chef_backend.EXPECTED_SERVICES)
    assert all(o.state == "degraded" and o.bad for o in failed)
    assert "boom" in failed[0].data["problems"][0]


# -- etcd_health ----------------------------------------------------------------------------


def test_etcd_bogus_endpoint_has_no_quorum(ctx: BeaconContext) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    [obs] = make(EtcdHealthBeacon, ctx, endpoints=[url], timeout=1).check()
    assert (obs.key, obs.state, obs.bad) == ("cluster", "no_quorum", True)
    assert (obs.data["healthy_count"], obs.data["total"]) == (0, 1)
    assert [u["endpoint"] for u in obs.data["unhealthy"]] == [url]
    assert obs.data["unhealthy"][0]["error"]


def _fake_health(healthy: list[bool]) -> Callable[..., dict[str, Any]]:
    def health(ctx: Any, endpoints: list[str], timeout: float, client: str) -> dict[str, Any]:
        assert client == "http"  # the beacon's default: nothing heavy in the minion
        checks = [
            {"endpoint": url, "healthy": ok, "error": None if ok else "refused", "leader": False}
            for url, ok in zip(endpoints, healthy, strict=True)
        ]
        count = sum(healthy)
        quorum = len(endpoints) // 2 + 1
        return {
            "client": "http-fallback",
            "endpoints": checks,
            "healthy_count": count,
            "total": len(endpoints),
            "quorum": quorum,
            "healthy": count >= quorum,
            "leaders": [],
        }

    return health


@pytest.mark.parametrize(
    ("healthy", "state", "bad"),
    [
        ([True, True, True], "healthy", False),
        ([True, True, False], "degraded", True),
        ([True, False, False], "no_quorum", True),
    ],
)
def test_etcd_states(ctx: BeaconContext, healthy: list[bool], state: str, bad: bool) -> None:
    faked = replace(ctx, functions={"etcd.health": _fake_health(healthy)})
    endpoints = ["http://a:2379", "http://b:2379", "http://c:2379"]
    [obs] = make(EtcdHealthBeacon, faked, endpoints=endpoints).check()
    assert (obs.state, obs.bad) == (state, bad)
    assert obs.data["healthy_count"] == sum(healthy)
    assert len(obs.data["unhealthy"]) == healthy.count(False)


# -- pg_replication -------------------------------------------------------------------------


def test_pg_replication_down_hides_the_password(ctx: BeaconContext) -> None:
    pytest.importorskip("psycopg2")
    beacon = make(PgReplicationBeacon, ctx, port=free_port(), password="s3cret-pw", timeout=1)
    [obs] = beacon.check()
    assert (obs.state, obs.bad) == ("down", True)
    assert "cannot connect" in obs.data["error"]
    assert "s3cret-pw" not in json.dumps(obs.data)
    assert PgReplicationBeacon.Config.model_validate({}).lag_bytes == 50 * 1024 * 1024


def test_pg_replication_states() -> None:
    leader = PgReplicationBeacon.observe(
        "n:5432", {"role": "leader", "followers": [{"application_name": "f1"}] * 2}
    )
    assert (leader.state, leader.bad, leader.data["follower_count"]) == ("leader", False, 2)
    follower = {
        "role": "follower",
        "wal_receiver": {"status": "streaming"},
        "replay_paused": False,
        "lag_bytes": 10,
        "in_sync": True,
        "problems": [],
    }
    in_sync = PgReplicationBeacon.observe("n:5432", follower)
    assert (in_sync.state, in_sync.bad, in_sync.data["receiver_status"]) == (
        "in_sync",
        False,
        "streaming",
    )
    lagging = follower | {"wal_receiver": None, "in_sync": False, "problems": ["not connected"]}
    out = PgReplicationBeacon.observe("n:5432", lagging)
    assert (out.state, out.bad, out.data["receiver_status"]) == ("out_of_sync", True, None)
    assert out.data["problems"] == ["not connected"]
    silent = ["The leader has heard nothing from this follower for 6.0s (limit 4s)."]
    believes = follower | {
        "in_sync": False,
        "problems": silent,
        "views": {"follower": {"problems": []}, "leader": {"sender": True, "problems": silent}},
        "seen_by": ["leader"],
    }
    worst = PgReplicationBeacon.observe("n:5432", believes)
    assert (worst.state, worst.bad, worst.data["receiver_status"]) == (
        "out_of_sync", True, "streaming",
    )  # fmt: skip
    assert worst.data["seen_by"] == ["leader"] and worst.data["views"] == believes["views"]


def test_chef_server_status_one_observation_per_service() -> None:
    from minion.beacons.chef_server_status import ChefServerStatusBeacon
    from minion.modules.chef_server import parse_status

    result = parse_status(
        "run: nginx: (pid 1301) 60s; run: log: (pid 1300) 60s\n"
        "down: opscode-erchef: 3s, normally up; run: log: (pid 1400) 60s\n"
    )
    seen = {o.key: o for o in ChefServerStatusBeacon.observe(result)}
    assert (seen["nginx"].state, seen["nginx"].bad) == ("ok", False)
    down = seen["opscode-erchef"]
    assert (down.state, down.bad, down.data["service"]) == ("down", True, "opscode-erchef")
    assert down.data["problems"] == ["opscode-erchef: down for 3s, normally up"]


def test_chef_server_status_unreadable(ctx: BeaconContext) -> None:
    from minion.beacons.chef_server_status import TOOL_KEY, ChefServerStatusBeacon

    beacon = make(ChefServerStatusBeacon, ctx)
    [seen] = beacon.check()  # no chef-server-ctl on this machine
    assert (seen.key, seen.state, seen.bad) == (TOOL_KEY, "unreadable", True)
    assert seen.data["error"]


def test_health_beacons_load_no_heavy_client_into_the_minion(tmp_path: Path) -> None:
    """Beacons run inside the long-lived minion: the official Elasticsearch client (~23 MB)
    and etcd3 with grpc (~27 MB) must stay out of it (jobs still use them, in a child)."""
    standin = EsStandin()
    host, port = standin.start()
    try:
        script = (
            "import sys\n"
            "from minion.beacons.base import BeaconContext\n"
            "from minion.beacons.elasticsearch_health import ElasticsearchHealthBeacon as E\n"
            "from minion.beacons.etcd_health import EtcdHealthBeacon as T\n"
            "ctx = BeaconContext('be1', None)\n"
            f"es = E(E.Config(url='http://{host}:{port}'), ctx).check()[0]\n"
            "et = T(T.Config(endpoints=['http://127.0.0.1:9'], timeout=0.5), ctx).check()[0]\n"
            "heavy = sorted(m for m in ('elasticsearch', 'etcd3', 'grpc') if m in sys.modules)\n"
            "print(es.state, et.state, heavy)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
    finally:
        standin.stop()
    assert out.split() == ["green", "no_quorum", "[]"]
