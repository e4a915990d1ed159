"""Re-cloning a follower beside its old copy (minion/modules/pg_reclone.py) on a real
PostgreSQL 15 leader and streaming follower: the old copy survives every failure."""

from collections.abc import Iterator
from pathlib import Path

import psycopg2  # type: ignore[import-untyped]
import pytest

from minion.modules import pg_reclone
from saline.errors import ExecutionError
from tests.pgcluster import PgCluster, PgNode, free_ports, pg_available, pg_cluster, wait_for

assert pg_available() is None, pg_available()  # installed by `make setup`: never a skip

MARK = "saline-test-old-copy"  # a file only the old copy has


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster(followers=1) as c:
        yield c


@pytest.fixture
def follower(cluster: PgCluster) -> PgNode:
    node = cluster.nodes[1]
    cluster.start(node)
    cluster.wait_streaming(node)
    (node.data / MARK).write_text("the copy that was there before\n")
    return node


def streams(node: PgNode) -> str | None:
    try:
        rows = node.query("SELECT status, sender_host FROM pg_stat_wal_receiver")
    except psycopg2.Error as e:
        raise ExecutionError(f"{node.name} does not answer: {e}".strip()) from None
    return str(rows[0][1]) if rows and rows[0][0] == "streaming" else None


def driver(cluster: PgCluster, node: PgNode) -> pg_reclone.Node:
    return pg_reclone.Node(
        stop=lambda: cluster.stop(node, "fast"),
        start=lambda: cluster.start(node),
        streaming=lambda: streams(node),
    )


def leftovers(node: PgNode) -> list[str]:
    return sorted(p.name for p in node.root.iterdir() if p.name.startswith("data.saline-"))


def rows(node: PgNode) -> int:
    return int(node.query("SELECT count(*) FROM reclone_t")[0][0])


def test_a_complete_copy_that_streams_replaces_the_old_one(
    cluster: PgCluster, follower: PgNode
) -> None:
    leader = cluster.leader
    assert leader is not None
    leader.query("CREATE TABLE IF NOT EXISTS reclone_t (i int)")
    leader.query("INSERT INTO reclone_t SELECT generate_series(1, 500)")
    done = pg_reclone.reclone(
        follower.data, (leader.host, leader.port), driver(cluster, follower), keep=["node.conf"]
    )
    assert done["old_copy_removed"] is True and done["data_dir"] == str(follower.data)
    assert not (follower.data / MARK).exists()  # the data directory is the new copy
    assert leftovers(follower) == []  # neither the old copy nor a half-made one is left
    assert streams(follower) == leader.host
    assert follower.query("SHOW port")[0][0] == str(follower.port)  # its own node.conf kept
    leader.query("INSERT INTO reclone_t SELECT generate_series(501, 600)")
    cluster.wait_streaming(follower)
    assert rows(leader) == 600
    wait_for(lambda: rows(follower) == 600, 20, what="the follower to replay every row")


def test_a_backup_that_fails_leaves_the_old_copy_running(
    cluster: PgCluster, follower: PgNode
) -> None:
    [nobody] = free_ports(1)  # no leader listens there: pg_basebackup cannot connect
    with pytest.raises(ExecutionError) as failed:
        pg_reclone.reclone(follower.data, ("127.0.0.1", nobody), driver(cluster, follower))
    said = str(failed.value)
    assert said.startswith("pg_basebackup failed: ") and "connection" in said, said
    assert said.endswith(f"the old data directory {follower.data} is untouched")
    assert cluster.password not in said and cluster.repl_password not in said
    assert (follower.data / MARK).exists()
    assert leftovers(follower) == []
    assert follower.running and streams(follower) is not None  # never stopped


def test_a_copy_that_does_not_stream_is_swapped_back_out(
    cluster: PgCluster, follower: PgNode
) -> None:
    leader = cluster.leader
    assert leader is not None
    started = driver(cluster, follower)
    never = pg_reclone.Node(stop=started.stop, start=started.start, streaming=lambda: None)
    with pytest.raises(ExecutionError) as failed:
        pg_reclone.reclone(
            follower.data, (leader.host, leader.port), never, keep=["node.conf"],
            stream_timeout=1,
        )  # fmt: skip
    said = str(failed.value)
    assert said.startswith("the re-cloned copy did not stream within 1s"), said
    assert said.endswith(
        f"swapped back: the old data directory is in place at {follower.data} again"
    )
    assert (follower.data / MARK).exists()  # the old copy, back and running
    assert leftovers(follower) == []
    cluster.wait_streaming(follower)


def test_bad_keep_names_are_refused_before_anything_runs(
    cluster: PgCluster, follower: PgNode
) -> None:
    leader = cluster.leader
    assert leader is not None
    for bad in ("../postgresql.conf", "", ".."):
        with pytest.raises(ExecutionError, match="is not a file name of the data directory"):
            pg_reclone.reclone(
                follower.data, (leader.host, leader.port), driver(cluster, follower), keep=[bad]
            )
    assert (follower.data / MARK).exists() and leftovers(follower) == []


def test_the_conninfo_is_the_followers_own_last_setting_winning(tmp_path: Path) -> None:
    (tmp_path / "recovery.conf").write_text(
        "standby_mode = 'on'\nprimary_conninfo = 'user=replicator password=s3cret host=a'\n"
    )
    assert pg_reclone.primary_conninfo(tmp_path) == {
        "user": "replicator", "password": "s3cret", "host": "a",
    }  # fmt: skip
    (tmp_path / "postgresql.auto.conf").write_text(  # quotes doubled in the file
        "primary_conninfo = 'user=replicator password=''s3 cret'' host=b port=5433'  # -R\n"
    )
    assert pg_reclone.primary_conninfo(tmp_path) == {
        "user": "replicator", "password": "s3 cret", "host": "b", "port": "5433",
    }  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExecutionError, match="sets no primary_conninfo: not a follower's copy"):
        pg_reclone.primary_conninfo(empty)
