"""The PostgreSQL returner: documents into an operator's own database, one table per kind
(``PREFIX_events``, ``PREFIX_returns``, ``PREFIX_reactions``: ``id`` primary key, ``ts``,
``doc`` jsonb), created if missing. ``INSERT ... ON CONFLICT DO NOTHING`` by id, so a batch
sent again is stored once. Not saline's own store: a place for reports and joins.
"""

import json
import re
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import psycopg2.extras  # type: ignore[import-untyped]

from master.returners.base import KINDS, Doc, Shipped, Unavailable

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PostgresReturner:
    def __init__(self, name: str, dsn: str, table_prefix: str = "saline") -> None:
        if not _PREFIX.match(table_prefix):
            raise ValueError(f"table_prefix {table_prefix!r}: lower-case letters, digits, '_'")
        self.name = name
        self.dsn = dsn
        self.prefix = table_prefix
        self._conn: Any = None

    def table(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(self.dsn, connect_timeout=5)
            with conn, conn.cursor() as cur:
                for kind in KINDS:
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {self.table(kind)} ("
                        "id TEXT PRIMARY KEY, ts TIMESTAMPTZ NOT NULL, doc JSONB NOT NULL)"
                    )
            self._conn = conn
        return self._conn

    def ship(self, docs: list[Doc]) -> Shipped:
        try:
            conn = self._connect()
            with conn, conn.cursor() as cur:
                for kind in KINDS:
                    rows = [
                        (d.id, d.body["@timestamp"], json.dumps(d.body))
                        for d in docs
                        if d.kind == kind
                    ]
                    if rows:
                        psycopg2.extras.execute_values(
                            cur,
                            f"INSERT INTO {self.table(kind)} (id, ts, doc) VALUES %s "  # noqa: S608
                            "ON CONFLICT (id) DO NOTHING",
                            rows,
                        )
        except psycopg2.Error as e:
            self.close()
            raise Unavailable(f"PostgreSQL: {type(e).__name__}: {str(e).strip()[:300]}") from e
        return Shipped(done=[d.id for d in docs])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
