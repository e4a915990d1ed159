"""A master that leads through a real etcd on a real PostgreSQL store: it campaigns, says
so in `saline status`, decides events read back from the store, and without etcd quorum
stops deciding (events wait, they are not lost) until leadership returns."""

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saline.lab.lab import Lab
from tests.etcdcluster import EtcdCluster
from tests.integration.test_store_postgres import _database, _dsn_file, _rows
from tests.pgcluster import PgCluster, pg_cluster
from tests.support import run_json, saline, status, wait_for


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with pg_cluster(followers=0) as cluster:
        yield cluster


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd") as cluster:
        cluster.wait_healthy()
        yield cluster


def leadership(lab: Lab) -> dict[str, Any]:
    proc = saline(lab, "status", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    lead: dict[str, Any] = json.loads(proc.stdout)["leadership"]
    return lead


def test_the_leader_decides_from_the_store_and_waits_without_quorum(
    pg: PgCluster, etcd: EtcdCluster, tmp_path: Path
) -> None:
    dsn = _database(pg, "saline_lead")
    lab = Lab(tmp_path / "lab")
    (lab.directory / "reactors").mkdir(parents=True)
    (lab.directory / "reactors" / "lead.yaml").write_text(
        textwrap.dedent(
            """\
            - name: lead-fix
              on: test/lead/*
              cooldown: 0
              do: [{run: {target: be1, function: test.ping}}]
            """
        )
    )
    extra = {
        "store": str(_dsn_file(tmp_path, dsn, 0o600)),
        "etcd_endpoints": etcd.client_urls,
        "master_name": "m1",
    }
    lab.up(1, timeout=60, extra_master=extra)
    try:
        wait_for(lambda: leadership(lab)["leading"], 15, "m1 to lead")
        lead = leadership(lab)
        assert lead["leader"] == "m1" and lead["epoch"] > 0 and lead["masters"].keys() == {"m1"}
        human = saline(lab, "status").stdout
        assert f"leader: m1 (epoch {lead['epoch']}, since " in human, human

        saline(lab, "fire", "test/lead/one")
        wait_for(lambda: _outcomes(dsn) == ["ok"], 20, "the first reaction")
        epochs = _rows(dsn, "SELECT epoch FROM reactions WHERE rule = 'lead-fix'")
        assert epochs == [(lead["epoch"],)], "the decision carries the leader's epoch"
        assert _rows(dsn, "SELECT epoch FROM jobs WHERE rule = 'lead-fix'") == epochs

        for name in ("etcd2", "etcd3"):  # quorum lost: nobody may lead
            etcd.kill(name)
        wait_for(lambda: not leadership(lab)["leading"], 15, "m1 to stop leading")
        assert leadership(lab)["leader"] is None
        refused = saline(lab, "reactor", "pause")
        assert refused.returncode != 0 and "does not lead" in refused.stderr, refused.stderr
        saline(lab, "fire", "test/lead/two")  # stored; nobody decides it yet
        ping = saline(lab, "run", "be1", "test.ping")  # ad-hoc commands still work
        assert ping.returncode == 0, ping.stderr
        assert _outcomes(dsn) == ["ok"]

        for name in ("etcd2", "etcd3"):
            etcd.restart(name)
        wait_for(lambda: leadership(lab)["leading"], 20, "leadership back with quorum")
        # etcd renews leases when it elects its own leader: the same term may go on
        assert leadership(lab)["epoch"] >= lead["epoch"] and leadership(lab)["leader"] == "m1"
        wait_for(lambda: _outcomes(dsn) == ["ok", "ok"], 20, "the waiting event decided")
        tags = _rows(
            dsn, "SELECT event_tag FROM reactions WHERE rule = 'lead-fix' ORDER BY created"
        )
        assert tags == [("test/lead/one",), ("test/lead/two",)], "decided once each"
    finally:
        lab.down()


def _outcomes(dsn: str) -> list[str]:
    rows = _rows(dsn, "SELECT outcome FROM reactions WHERE rule = 'lead-fix' ORDER BY created")
    return [str(r[0]) for r in rows]


def test_postgresql_away_for_ten_seconds_loses_nothing(pg: PgCluster, tmp_path: Path) -> None:
    """The store's server stops while a job runs: minions stay connected, the CLI says the
    store is unavailable, the return waits in the minion's spool and is stored once the
    server is back."""
    dsn = _database(pg, "saline_outage")
    lab = Lab(tmp_path / "lab")
    lab.up(2, timeout=60, extra_master={"store": str(_dsn_file(tmp_path, dsn, 0o600))})
    node = pg.leader
    assert node is not None
    try:
        proc = saline(lab, "run", "be1", "test.sleep", "seconds=3", "--async")
        assert proc.returncode == 0, proc.stderr
        jid = proc.stdout.split()[-1]
        pg.stop(node)
        try:
            listed = saline(lab, "jobs", "list")
            assert listed.returncode != 0 and "unavailable" in listed.stderr, listed.stderr
            assert pg.password not in listed.stderr
            # the return comes back while the store is away: not acknowledged, kept
            wait_for(lambda: _spooled(lab, "be1"), 15, "be1 to hold its return in its spool")
            assert set(status(lab)["online"]) == set(lab.state["minions"]), "minions kept"
        finally:
            pg.start(node)
        wait_for(lambda: _returned(dsn, jid), 30, "the spooled return stored")
        # the acknowledgement follows the store's commit: the spool empties just after
        wait_for(lambda: not _spooled(lab, "be1"), 15, "be1's spool emptied by the ack")
        code, doc = run_json(lab, "*", "test.ping")
        assert code == 0 and set(doc["returns"]) == set(lab.state["minions"])
    finally:
        lab.down()


def _spooled(lab: Lab, minion: str) -> bool:
    spool = lab.directory / "minions" / minion / "cache" / "spool"
    return any(p.is_file() for p in spool.glob("*")) if spool.is_dir() else False


def _returned(dsn: str, jid: str) -> bool:
    try:
        return _rows(dsn, f"SELECT minion FROM returns WHERE jid = '{jid}'") == [("be1",)]
    except Exception:  # the server is still starting
        return False
