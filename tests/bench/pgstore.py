"""The stores a benchmark measures side by side, and the PostgreSQL server behind one.

``--store sqlite,postgresql`` (both by default): for ``postgresql`` a real PostgreSQL 15 is
started by the masters lab's own helper (:mod:`saline.lab.store_pg`: initdb, one database,
a 0600 DSN file; as the ``postgres`` user when run as root), on a free loopback port in a
fresh directory, and stopped and wiped afterwards. ``PgServer.database()`` creates a new,
empty database on it, so each measurement starts from an empty store as SQLite's does.
The server runs with the lab's settings (``fsync = off``, as the SQLite store's
``synchronous=NORMAL`` in WAL mode does not sync on commit either).
"""

import argparse
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]

from saline.lab import store_pg
from saline.lab.lab import free_port
from saline.private_file import read_private_file

STORES = ("sqlite", "postgresql")


def store_list(text: str) -> list[str]:
    """``--store``'s value: a comma-separated subset of STORES, in the order given."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(STORES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"stores are {', '.join(STORES)}; got {text!r}")
    return list(dict.fromkeys(names))


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=store_list,
        default=list(STORES),
        metavar="LIST",
        help="stores to measure, comma-separated (default: sqlite,postgresql)",
    )


@dataclass
class PgServer:
    """A running server: ``dsn_file`` names its ``saline`` database."""

    directory: Path
    svc: dict[str, Any]
    pid: int
    _count: Iterator[int] = field(default_factory=itertools.count)

    @property
    def dsn_file(self) -> Path:
        return Path(self.svc["dsn_file"])

    def dsn(self, database: str = store_pg.DATABASE) -> str:
        base = read_private_file(self.dsn_file, "store", kind="DSN file").strip()
        return base.rsplit("/", 1)[0] + "/" + database

    def database(self) -> Path:
        """A new, empty database; :returns: a 0600 DSN file naming it (for ``store:``)."""
        name = f"bench{next(self._count)}"
        conn = psycopg2.connect(self.dsn())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {name}")  # our own counter: no injection
        finally:
            conn.close()
        path = self.directory / f"{name}.dsn"
        store_pg.write_dsn(path, self.dsn(name))
        return path


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """A started PostgreSQL server in a fresh /tmp directory; always stopped and wiped."""
    directory = Path(tempfile.mkdtemp(prefix="slpg-"))
    directory.chmod(0o711)  # the postgres user must reach store-pg/ inside it
    svc = store_pg.service(directory, free_port())
    try:
        pid = store_pg.start(svc)
        yield PgServer(directory, svc, pid)
    finally:
        try:
            store_pg.stop(svc)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children, living ones and those it reaped: for the
    postmaster, the whole server (every backend is its child)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if stat.parent.name == str(pid):
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / tick
