"""Fixtures starting a real lab: a master and minion processes over real CurveZMQ."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from saline.lab.lab import Lab
from tests.integration.peers import Dealer, MakeDealer

#: every hostile peer of the tests comes from 127.0.0.1 with a fresh key: the per-address
#: limit on new keys' handshakes (tested on its own lab) would refuse most of them
_MANY_NEW_KEYS = {"new_key_rate_per_address": 1000.0, "new_key_burst_per_address": 10000.0}


def _start(directory: Path, count: int) -> Lab:
    lab = Lab(directory)
    lab.up(count, timeout=60, extra_master=_MANY_NEW_KEYS)
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of 4 minions (be1, be2 backends; fe1, fe2 frontends) shared by a module."""
    the_lab = _start(tmp_path_factory.mktemp("lab"), 4)
    yield the_lab
    the_lab.down()


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[Lab]:
    """A lab of 3 minions for one test that may break it (kill processes...)."""
    the_lab = _start(tmp_path / "lab", 3)
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
