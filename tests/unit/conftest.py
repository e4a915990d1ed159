"""Stores for the unit tier: every store test runs against SQLite and a real PostgreSQL.

One PostgreSQL server (``tests/pgcluster.py``) serves the whole session; each test gets a
fresh schema of its own (``search_path``), so tests never see each other's rows.
"""

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from master.store.base import Store
from master.store.postgres import PostgresStore
from master.store.sqlite import SqliteStore
from tests.pgcluster import PgCluster, free_ports, pg_available

_schemas = itertools.count()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """The DSN of a real PostgreSQL server started for this session."""
    problem = pg_available()
    assert problem is None, f"{problem}: install postgresql (the CI script does)"
    base = Path(tempfile.mkdtemp(prefix="saline-store-pg-"))
    cluster = PgCluster(base, free_ports(1))
    try:
        node = cluster.start_leader()
        yield (
            f"host={node.host} port={node.port} user=saline"
            f" password={cluster.password} dbname=postgres"
        )
    finally:
        try:
            cluster.stop_all()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def fresh_schema(dsn: str) -> str:
    """A DSN whose tables live in a new, empty schema."""
    import psycopg2  # type: ignore[import-untyped]

    name = f"t{next(_schemas)}"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {name}")  # our own counter: no injection
    conn.close()
    return f"{dsn} options='-csearch_path={name}'"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each backend."""
    store: Store
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "state" / "master.db")
    else:
        store = PostgresStore(fresh_schema(request.getfixturevalue("pg_dsn")))
    yield store
    store.close()
