"""Fixtures starting a real lab: a master and minion processes over real CurveZMQ.

``SALINE_TEST_STORE=postgresql`` gives every lab's master a PostgreSQL store (a database
of its own on one server started for the session) instead of the embedded SQLite: the
second pass of ``make test``.
"""

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from saline.lab.lab import Lab
from tests.integration.peers import Dealer, MakeDealer
from tests.pgcluster import pg_cluster

#: every hostile peer of the tests comes from 127.0.0.1 with a fresh key: the per-address
#: limit on new keys' handshakes (tested on its own lab) would refuse most of them
_MANY_NEW_KEYS = {"new_key_rate_per_address": 1000.0, "new_key_burst_per_address": 10000.0}


#: settings for the master of a new lab: {} (SQLite) or a store of its own
StoreSettings = Callable[[], dict[str, Any]]


@pytest.fixture(scope="session")
def lab_store() -> Iterator[StoreSettings]:
    if os.environ.get("SALINE_TEST_STORE", "sqlite") != "postgresql":
        yield dict
        return
    base = Path(tempfile.mkdtemp(prefix="saline-lab-store-"))
    numbers = itertools.count(1)
    with pg_cluster(followers=0) as cluster:
        node = cluster.leader
        assert node is not None

        def database() -> dict[str, Any]:
            name = f"lab{next(numbers)}"
            conn = node.connect()
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {name}")  # our own counter: no injection
            conn.close()
            dsn = base / f"{name}.dsn"
            dsn.write_text(
                f"postgresql://saline:{cluster.password}@{node.host}:{node.port}/{name}\n"
            )
            dsn.chmod(0o600)
            return {"store": str(dsn)}

        yield database


def _start(directory: Path, count: int, store: StoreSettings) -> Lab:
    lab = Lab(directory)
    lab.up(count, timeout=60, extra_master={**_MANY_NEW_KEYS, **store()})
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, lab_store: StoreSettings) -> Iterator[Lab]:
    """A lab of 4 minions (be1, be2 backends; fe1, fe2 frontends) shared by a module."""
    the_lab = _start(tmp_path_factory.mktemp("lab"), 4, lab_store)
    yield the_lab
    the_lab.down()


@pytest.fixture
def fresh_lab(tmp_path: Path, lab_store: StoreSettings) -> Iterator[Lab]:
    """A lab of 3 minions for one test that may break it (kill processes...)."""
    the_lab = _start(tmp_path / "lab", 3, lab_store)
    yield the_lab
    the_lab.down()


@pytest.fixture
def fresh_sqlite_lab(tmp_path: Path) -> Iterator[Lab]:
    """``fresh_lab`` on the embedded SQLite store whatever the pass (tests of its file)."""
    the_lab = _start(tmp_path / "lab", 3, dict)
    yield the_lab
    the_lab.down()


@pytest.fixture(scope="module")
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def dealer(zctx: zmq.Context[Any], lab: Lab) -> Iterator[MakeDealer]:
    """Factory: ``dealer()`` with a fresh (unknown) key, ``dealer(public, secret)`` otherwise."""
    made: list[Dealer] = []

    def make(public: bytes | None = None, secret: bytes | None = None, on: Lab = lab) -> Dealer:
        if public is None or secret is None:
            public, secret = zmq.curve_keypair()
        d = Dealer(zctx, on, public, secret).connect()
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
