"""A real master on a real PostgreSQL store: jobs, returns, events and the reactor's trail
live there (with each job's reaction chain), the DSN comes from a file only the master's
user may read, `saline store migrate` reports the schema and `saline store stats` its
tables."""

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest

from saline.lab.lab import Lab, LabError
from tests.pgcluster import PgCluster, pg_cluster
from tests.support import run_json, saline, wait_for


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with pg_cluster(followers=0) as cluster:
        yield cluster


def _database(pg: PgCluster, name: str) -> str:
    node = pg.leader
    assert node is not None
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")  # a constant of this test
    conn.close()
    return f"postgresql://saline:{pg.password}@{node.host}:{node.port}/{name}"


def _rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def _dsn_file(tmp_path: Path, dsn: str, mode: int) -> Path:
    path = tmp_path / "store.dsn"
    path.write_text(dsn + "\n")
    path.chmod(mode)
    return path


def test_a_master_keeps_everything_in_postgresql(pg: PgCluster, tmp_path: Path) -> None:
    dsn = _database(pg, "saline_lab")
    lab = Lab(tmp_path / "lab")
    lab.up(2, timeout=60, extra_master={"store": str(_dsn_file(tmp_path, dsn, 0o600))})
    try:
        proc = saline(lab, "store", "migrate")
        assert proc.returncode == 0, proc.stderr
        assert "PostgreSQL (DSN in" in proc.stdout and "schema version 4" in proc.stdout
        assert pg.password not in proc.stdout + proc.stderr

        code, result = run_json(lab, "be1", "test.ping")
        assert code == 0 and result["returns"]["be1"]["success"] is True
        jid = result["jid"]
        assert _rows(dsn, f"SELECT minion FROM returns WHERE jid = '{jid}'") == [("be1",)]

        (lab.directory / "reactors" / "pg.yaml").write_text(
            textwrap.dedent(
                """\
                - name: pg-fix
                  on: test/pg/broken
                  do: [{run: {target: be1, function: test.ping}}]
                """
            )
        )
        assert saline(lab, "reactor", "reload").returncode == 0
        with lab.client() as master:
            fired = master.request("fire", tag="test/pg/broken", data={})
        wait_for(
            lambda: _rows(dsn, "SELECT outcome FROM reactions WHERE rule = 'pg-fix'") == [("ok",)],
            20,
            "the reaction's outcome stored in PostgreSQL",
        )
        chains = _rows(dsn, "SELECT cause, depth, rule FROM jobs WHERE rule = 'pg-fix'")
        assert chains == [(fired["seq"], 1, "pg-fix")], "the job carries its reaction chain"
        proc = saline(lab, "reactor", "history", "--rule", "pg-fix", "--out", "json")
        assert json.loads(proc.stdout)[0]["outcome"] == "ok"
        proc = saline(lab, "store", "stats", "--out", "json")
        assert proc.returncode == 0 and pg.password not in proc.stdout, proc.stderr
        tables = json.loads(proc.stdout)["tables"]
        assert tables["reactions"]["rows"] == 1 and tables["jobs"]["rows"] >= 2
        assert all(t["bytes"] > 0 for t in tables.values())  # pg_total_relation_size
    finally:
        lab.down()


def test_a_dsn_file_open_to_others_stops_the_start(pg: PgCluster, tmp_path: Path) -> None:
    dsn = _database(pg, "saline_open")
    lab = Lab(tmp_path / "lab")
    with pytest.raises(LabError, match="exited: master"):
        lab.up(1, timeout=30, extra_master={"store": str(_dsn_file(tmp_path, dsn, 0o644))})
    lab.down()
    out = (lab.directory / "logs" / "master.out").read_text()
    assert "is open to others (mode 0644): chmod 600" in out
    assert os.path.exists(tmp_path / "store.dsn")
