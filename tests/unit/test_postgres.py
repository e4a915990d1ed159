"""postgres.replication against a real PostgreSQL 15 leader and streaming follower."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minion.config import MinionConfig
from minion.modules import postgres
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from tests.pgcluster import PgCluster, PgNode, free_ports, pg_available, pg_cluster, wait_for

# PostgreSQL is installed by `make setup`; a missing server is a failure, never a skip
assert pg_available() is None, pg_available()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster(followers=1) as c:
        yield c


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    tmp: Path = tmp_path_factory.mktemp("pgctx")
    config = MinionConfig(id="m1", cachedir=tmp / "cache", pki_dir=tmp / "pki")
    provider = SupervisorProvider(config.services, config.cachedir / "services")
    return Context(minion_id="m1", config=config, grains={"id": "m1"}, services=provider)


def _leader(cluster: PgCluster) -> PgNode:
    assert cluster.leader is not None
    return cluster.leader


def _follower(cluster: PgCluster) -> PgNode:
    return cluster.nodes[1]


def check(ctx: Context, cluster: PgCluster, node: PgNode, **kwargs: Any) -> dict[str, Any]:
    result = postgres.replication(
        ctx, host=node.host, port=node.port, password=cluster.password, **kwargs
    )
    assert cluster.password not in repr(result)
    return result


def _write(cluster: PgCluster, rows: int = 1000) -> None:
    _leader(cluster).query(
        "CREATE TABLE IF NOT EXISTS t (i int, pad text);"
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, %s) g",
        (rows,),
    )


def test_leader_sees_one_streaming_follower_with_small_lag(
    ctx: Context, cluster: PgCluster
) -> None:
    _write(cluster)
    leader, follower = _leader(cluster), _follower(cluster)
    result = wait_for(
        lambda: (
            (r := check(ctx, cluster, leader))["followers"]
            and r["followers"][0]["lag_bytes"] == 0
            and r
        ),
        what="follower to catch up",
    )
    assert result["role"] == "leader"
    assert len(result["followers"]) == 1
    row = result["followers"][0]
    assert row["application_name"] == follower.name
    assert row["client_addr"] == "127.0.0.1"
    assert row["state"] == "streaming"
    assert row["replay_lsn"] == row["sent_lsn"]
    assert row["reply_time"] is not None


def test_follower_in_sync(ctx: Context, cluster: PgCluster) -> None:
    leader, follower = _leader(cluster), _follower(cluster)
    result = check(ctx, cluster, follower)
    assert result["role"] == "follower"
    assert result["in_sync"] is True, result["problems"]
    assert result["problems"] == []
    assert result["replay_paused"] is False
    assert result["lag_bytes"] == 0
    receiver = result["wal_receiver"]
    assert receiver is not None
    assert receiver["status"] == "streaming"
    assert receiver["sender_port"] == leader.port
    assert receiver["last_msg_receipt_time"] is not None


def test_paused_replay_is_reported_then_resumed(ctx: Context, cluster: PgCluster) -> None:
    follower = _follower(cluster)
    cluster.pause_replay(follower)
    try:
        _write(cluster, 5000)
        result = wait_for(
            lambda: (r := check(ctx, cluster, follower, lag_bytes=1024))["lag_bytes"] and r,
            what="WAL received but not replayed",
        )
        assert result["replay_paused"] is True
        assert result["in_sync"] is False
        assert result["lag_bytes"] > 1024
        assert result["receive_lsn"] != result["replay_lsn"]
        assert any("paused" in p for p in result["problems"]), result["problems"]
        assert any("lags" in p for p in result["problems"]), result["problems"]
    finally:
        cluster.resume_replay(follower)
    result = wait_for(
        lambda: (r := check(ctx, cluster, follower))["in_sync"] and r["lag_bytes"] == 0 and r,
        what="replay to catch up",
    )
    assert result["replay_paused"] is False
    assert result["lag_bytes"] == 0
    assert result["problems"] == []


def test_stopped_follower_disappears_from_leader(ctx: Context, cluster: PgCluster) -> None:
    leader, follower = _leader(cluster), _follower(cluster)
    assert len(check(ctx, cluster, leader)["followers"]) == 1
    cluster.stop(follower)
    try:
        assert follower.running is False
        result = wait_for(
            lambda: (r := check(ctx, cluster, leader))["followers"] == [] and r,
            what="the leader to drop the follower's row",
        )
        assert result["role"] == "leader"
        with pytest.raises(ExecutionError, match=f"127.0.0.1:{follower.port}"):
            check(ctx, cluster, follower)
    finally:
        cluster.start(follower)
        cluster.wait_streaming(follower)
    assert check(ctx, cluster, leader)["followers"][0]["application_name"] == follower.name


def test_unreachable_port_raises_without_password(ctx: Context) -> None:
    (port,) = free_ports(1)
    secret = "s3cret-never-shown"
    with pytest.raises(ExecutionError) as info:
        postgres.replication(ctx, port=port, password=secret, timeout=2)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert secret not in str(info.value)
    assert info.value.__cause__ is None  # raised from None: no chained psycopg2 error


def test_wrong_password_raises_without_password(ctx: Context, cluster: PgCluster) -> None:
    leader = _leader(cluster)
    secret = "wrong-" + cluster.password[:8]
    with pytest.raises(ExecutionError, match="password authentication failed") as info:
        postgres.replication(ctx, port=leader.port, password=secret)
    assert f"127.0.0.1:{leader.port}" in str(info.value)
    assert secret not in str(info.value)


def test_registered_in_functions() -> None:
    assert {
        "replication": postgres.replication,
        "resume_replay": postgres.resume_replay,
    } == postgres.FUNCTIONS


def test_resume_replay_unpauses_a_follower_and_refuses_the_leader(
    ctx: Context, cluster: PgCluster
) -> None:
    follower = _follower(cluster)
    cluster.pause_replay(follower)
    wait_for(lambda: check(ctx, cluster, follower)["replay_paused"], what="replay paused")
    done = postgres.resume_replay(
        ctx, host=follower.host, port=follower.port, password=cluster.password
    )
    assert done == {"node": f"{follower.host}:{follower.port}", "was_paused": True}
    assert check(ctx, cluster, follower)["replay_paused"] is False
    leader = _leader(cluster)
    with pytest.raises(ExecutionError, match="not a follower"):
        postgres.resume_replay(ctx, host=leader.host, port=leader.port, password=cluster.password)


# --- the leader's view of a follower --------------------------------------------------------


def test_a_streaming_follower_is_seen_streaming_by_its_leader_too(
    ctx: Context, cluster: PgCluster
) -> None:
    follower = _follower(cluster)
    result = check(ctx, cluster, follower)
    assert result["in_sync"] is True and result["seen_by"] == []
    assert result["wal_receiver"]["application_name"] == follower.name
    view = result["views"]["leader"]
    assert view["leader"] == f"127.0.0.1:{_leader(cluster).port}"
    assert (view["sender"], view["state"], view["problems"]) == (True, "streaming", [])
    assert view["reply_age_seconds"] is not None and view["reply_age_seconds"] < 30
    assert "conninfo" not in repr(result) and "replicator" not in repr(result)
    alone = check(ctx, cluster, follower, leader_view=False)
    assert "leader" not in alone["views"]


def test_a_stalled_sender_is_seen_by_the_leader_while_the_follower_believes_it_streams(
    ctx: Context, cluster: PgCluster
) -> None:
    """The leader's WAL sender for this follower stops (SIGSTOP): the follower's receiver
    still says streaming and nothing lags behind what it received, yet it receives nothing.
    Only the leader sees it: the follower's replies stop reaching it."""
    leader, follower = _leader(cluster), _follower(cluster)
    follower.query("ALTER SYSTEM SET wal_receiver_status_interval = '1s'")
    follower.query("SELECT pg_reload_conf()")
    [(pid,)] = leader.query(
        "SELECT pid FROM pg_stat_replication WHERE application_name = %s", (follower.name,)
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        _write(cluster, 100)
        stalled = wait_for(
            lambda: (r := check(ctx, cluster, follower, max_reply_age=3))["seen_by"] and r,
            what="the leader's view to see the silence",
        )
        assert stalled["in_sync"] is False and stalled["seen_by"] == ["leader"]
        assert stalled["views"]["follower"]["problems"] == []  # it believes it streams
        assert stalled["wal_receiver"]["status"] == "streaming"
        [said] = stalled["views"]["leader"]["problems"]
        assert said.startswith("The leader has heard nothing from this follower for ")
        assert said.endswith("s (limit 3s).") and said in stalled["problems"]
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(
        lambda: check(ctx, cluster, follower, max_reply_age=3)["in_sync"],
        what="the sender to resume",
    )
    follower.query("ALTER SYSTEM RESET wal_receiver_status_interval")
    follower.query("SELECT pg_reload_conf()")


ROW = ("10.0.0.3", "streaming", 0, 0, 0, None, None, None, 0.5)


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([], "The leader has no WAL sender for this follower (application_name be3)."),
        ([(*ROW[:1], "catchup", *ROW[2:])], "The leader's WAL sender is catchup, not streaming."),
        ([(*ROW[:4], 2048, *ROW[5:])], "The leader sees replay 2048 bytes behind (limit 1024)."),
        ([(*ROW[:7], 12.5, ROW[8])], "The leader sees replay 12.5s behind (limit 10s)."),
        ([(*ROW[:8], None)], "The leader has heard nothing from this follower ever (limit 5s)."),
        (
            [(*ROW[:8], 9.25)],
            "The leader has heard nothing from this follower for 9.2s (limit 5s).",
        ),
    ],
)
def test_the_leaders_view_judges_its_row(rows: list[tuple[Any, ...]], problem: str) -> None:
    view = postgres.judge_leader_view(rows, "be3", "10.0.0.3", 1024, 10.0, 5.0)
    assert view["problems"] == [problem]


def test_a_stale_sender_beside_a_new_one_is_not_the_leaders_view() -> None:
    stale = (*ROW[:8], 40.0)  # a sender left behind, silent; the follower reconnected
    elsewhere = ("10.0.0.9", *ROW[1:])  # another follower with the same name
    view = postgres.judge_leader_view([stale, elsewhere, ROW], "be3", "10.0.0.3", 1024, 10, 5)
    assert (view["client_addr"], view["reply_age_seconds"], view["problems"]) == (
        "10.0.0.3", 0.5, [],
    )  # fmt: skip
