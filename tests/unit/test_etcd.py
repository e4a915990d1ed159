"""etcd.* against a real three-member etcd cluster (needs /usr/bin/etcd: Debian etcd-server)."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minion.config import MinionConfig
from minion.modules import etcd as etcd_module
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from tests.etcdcluster import ETCD, EtcdCluster, free_port

# etcd is installed by `make setup`; a missing server is a failure, never a skip
assert Path(ETCD).exists(), f"{ETCD} missing: run `make setup` (installs etcd-server)"

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        c.start()
        c.wait_healthy(20)
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def healthy_cluster(cluster: EtcdCluster) -> EtcdCluster:
    """The shared cluster with every member running and healthy (a test may have killed some)."""
    for name, member in cluster.members.items():
        if not member.running:
            cluster.restart(name)
    cluster.wait_healthy(20)
    return cluster


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    config = MinionConfig(id="m1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
    provider = SupervisorProvider(config.services, config.cachedir / "services")
    return Context(minion_id="m1", config=config, grains={"id": "m1"}, services=provider)


@pytest.fixture(params=["client", "http"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the etcd3 client (when it imports here) and through HTTP only."""
    if request.param == "http":
        monkeypatch.setattr(etcd_module, "_load_client", lambda: None)
    return str(request.param)


def by_endpoint(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["endpoint"]: check for check in result["endpoints"]}


def leader_name(cluster: EtcdCluster, result: dict[str, Any]) -> str:
    checks = by_endpoint(result)
    leaders = [n for n, m in cluster.members.items() if checks[m.client_url]["leader"]]
    assert len(leaders) == 1, result
    return leaders[0]


def test_all_healthy_exactly_one_leader(
    healthy_cluster: EtcdCluster, ctx: Context, mode: str
) -> None:
    result = etcd_module.health(ctx, healthy_cluster.endpoints)
    if mode == "http":
        assert result["client"] == "http-fallback"
    elif etcd_module._load_client() is not None:
        assert result["client"] == "etcd3"
    assert (result["healthy_count"], result["total"], result["quorum"]) == (3, 3, 2)
    assert result["healthy"] is True
    checks = result["endpoints"]
    assert [c["endpoint"] for c in checks] == healthy_cluster.client_urls
    assert all(c["healthy"] and c["error"] is None for c in checks)
    assert all(c["version"] == "3.4.23" or c["version"].startswith("3.") for c in checks)
    assert len({c["member_id"] for c in checks}) == 3
    assert len({c["raft_term"] for c in checks}) == 1  # one term, agreed by all
    assert [c["leader"] for c in checks].count(True) == 1
    assert result["leaders"] == [next(c["member_id"] for c in checks if c["leader"])]


def test_etcd3_client_used_in_a_fresh_interpreter(healthy_cluster: EtcdCluster) -> None:
    """With protobuf >= 4 installed, a fresh process still gets the gRPC client, not fallback."""
    code = (
        "import json, sys\n"
        "from minion.modules import etcd\n"
        "print(json.dumps(etcd.health(None, sys.argv[1])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    out = subprocess.run(
        [sys.executable, "-c", code, healthy_cluster.endpoints],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["client"] == "etcd3"
    assert result["healthy"] is True
    assert [c["leader"] for c in result["endpoints"]].count(True) == 1


def test_quorum_survives_one_loss_not_two_and_recovers(
    healthy_cluster: EtcdCluster, ctx: Context, mode: str
) -> None:
    c = healthy_cluster
    leader = leader_name(c, etcd_module.health(ctx, c.endpoints))

    # kill the leader: the two others elect a new one and keep the quorum
    c.kill(leader)
    survivors = [n for n in c.members if n != leader]
    c.wait_healthy(20, members=survivors)
    result = etcd_module.health(ctx, c.client_urls, timeout=2)
    assert (result["healthy_count"], result["total"]) == (2, 3)
    assert result["healthy"] is True
    dead = by_endpoint(result)[c.members[leader].client_url]
    assert dead["healthy"] is False and dead["error"]
    assert leader_name(c, result) in survivors

    # kill a second one: the last member has no quorum, so nothing is healthy
    c.kill(survivors[0])
    result = etcd_module.health(ctx, c.endpoints, timeout=2)
    assert result["healthy_count"] < result["quorum"] == 2
    assert result["healthy"] is False
    last = by_endpoint(result)[c.members[survivors[1]].client_url]
    assert last["healthy"] is False and last["error"]

    # restart both with the same command line: they rejoin and the cluster heals
    c.restart(leader)
    c.restart(survivors[0])
    c.wait_healthy(20)
    result = etcd_module.health(ctx, c.endpoints)
    assert result["healthy_count"] == 3 and result["healthy"] is True
    leader_name(c, result)


def test_members_lists_the_three(healthy_cluster: EtcdCluster, ctx: Context, mode: str) -> None:
    members = etcd_module.members(ctx, healthy_cluster.client_urls[0])
    assert sorted(m["name"] for m in members) == ["etcd1", "etcd2", "etcd3"]
    for m in members:
        expected = healthy_cluster.members[m["name"]]
        assert m["client_urls"] == [expected.client_url]
        assert m["peer_urls"] == [expected.peer_url]
    ids = {m["id"] for m in members}
    assert len(ids) == 3
    health = etcd_module.health(ctx, healthy_cluster.endpoints)
    assert ids == {c["member_id"] for c in health["endpoints"]}


def test_members_skips_a_dead_endpoint(healthy_cluster: EtcdCluster, ctx: Context) -> None:
    bogus = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    members = etcd_module.members(ctx, [bogus, healthy_cluster.client_urls[1]], timeout=1)
    assert len(members) == 3
    with pytest.raises(ExecutionError, match="no endpoint answered"):
        etcd_module.members(ctx, bogus, timeout=1)


def test_bogus_endpoint_reported_not_raised(
    healthy_cluster: EtcdCluster, ctx: Context, mode: str
) -> None:
    bogus = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    result = etcd_module.health(ctx, [bogus], timeout=1)
    assert result["total"] == 1 and result["healthy_count"] == 0
    assert result["healthy"] is False
    (check,) = result["endpoints"]
    assert check["endpoint"] == bogus
    assert check["healthy"] is False
    assert isinstance(check["error"], str) and check["error"]
    # mixed with the real cluster: 3 of 4 healthy, quorum of 4 is 3
    result = etcd_module.health(ctx, [*healthy_cluster.client_urls, bogus], timeout=1)
    assert (result["healthy_count"], result["total"], result["quorum"]) == (3, 4, 3)
    assert result["healthy"] is True


@pytest.mark.parametrize(
    "endpoints", ["", " , ", [], "127.0.0.1:2379", "ftp://h:1", "http://h:notaport"]
)
def test_bad_arguments_raise(ctx: Context, endpoints: Any) -> None:
    with pytest.raises(ExecutionError):
        etcd_module.health(ctx, endpoints)
    with pytest.raises(ExecutionError):
        etcd_module.members(ctx, endpoints)


def test_bad_timeout_raises(ctx: Context) -> None:
    with pytest.raises(ExecutionError, match="timeout"):
        etcd_module.health(ctx, "http://127.0.0.1:2379", timeout=0)


def test_functions_table() -> None:
    assert {"health": etcd_module.health, "members": etcd_module.members} == etcd_module.FUNCTIONS


def test_import_does_not_load_etcd3_or_protobuf() -> None:
    code = (
        "import sys\n"
        "import minion.modules.etcd\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('etcd3', 'google', 'grpc'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_http_client_choice_never_loads_etcd3(healthy_cluster: EtcdCluster, ctx: Context) -> None:
    result = etcd_module.health(ctx, healthy_cluster.endpoints, client="http")
    assert result["client"] == "http"
    assert result["healthy_count"] == 3
    with pytest.raises(ExecutionError, match="client must be auto or http"):
        etcd_module.health(ctx, healthy_cluster.endpoints, client="grpc")
