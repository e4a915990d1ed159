"""A hostile peer of the lab master: a CURVE DEALER of the test's own, keys in the ring,
the master's refusal counters, and the check that the lab still serves."""

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import zmq
from pydantic import BaseModel

from saline.codec import decode_from_master, encode
from saline.keys import KeyRing, KeyState, read_keypair
from saline.lab.lab import Lab
from saline.protocol import DEFAULT_MAX_FRAME
from saline.transport import tcp_address
from tests.support import run_json, status, wait_for

ALL = {"be1", "be2", "fe1", "fe2"}
#: the lab master runs with the default frame cap
CAP = DEFAULT_MAX_FRAME


class Dealer:
    """A CURVE client DEALER of the test's own, speaking raw frames to the lab master."""

    def __init__(self, ctx: zmq.Context[Any], lab: Lab, public: bytes, secret: bytes) -> None:
        self.public = public.decode()
        master_public = read_keypair(lab.directory / "master" / "pki", "master").public
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.CURVE_SERVERKEY, master_public.encode())
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self.address = tcp_address("127.0.0.1", int(lab.state["port"]))

    def connect(self) -> "Dealer":
        self.sock.connect(self.address)
        return self

    def send(self, data: bytes | BaseModel) -> None:
        self.sock.send(encode(data) if isinstance(data, BaseModel) else data, copy=False)

    def recv(self, timeout: float = 5.0) -> BaseModel:
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"no reply from the master within {timeout}s")
        message: BaseModel = decode_from_master(self.sock.recv(), CAP)
        return message

    def waiting(self) -> list[BaseModel]:
        """Replies already delivered, without waiting for more."""
        found: list[BaseModel] = []
        while self.sock.poll(0):
            found.append(decode_from_master(self.sock.recv(), CAP))
        return found

    def close(self) -> None:
        self.sock.close(linger=0)


MakeDealer = Callable[..., Dealer]


@contextmanager
def key_in_ring(lab: Lab, state: KeyState) -> Iterator[tuple[str, bytes, bytes]]:
    """A fresh keypair bound to a fresh id in ``state``; gone again afterwards.

    Waits until the master itself lists the key (it re-reads the ring on its own), so the
    first frame sent is already judged under the new state.
    """
    public, secret = zmq.curve_keypair()
    minion_id = f"zz-badinput-{secrets.token_hex(4)}"
    ring = KeyRing(lab.directory / "master" / "pki")
    ring.add(minion_id, public.decode(), state)
    wait_for(lambda: minion_id in status(lab)["keys"][state.value], 5, f"{minion_id} {state}")
    try:
        yield minion_id, public, secret
    finally:
        ring.delete(minion_id)
        wait_for(lambda: minion_id not in status(lab)["keys"][state.value], 5, f"{minion_id} gone")


def refusals(lab: Lab) -> Counter[str]:
    return Counter(status(lab)["refusals"])


def wait_counted(lab: Lab, reason: str, before: Counter[str], n: int = 1) -> Counter[str]:
    """Wait until ``reason`` rose by at least ``n`` over ``before``; return the counters."""
    return wait_for(
        lambda: (now := refusals(lab))[reason] >= before[reason] + n and now,
        5,
        f"refusal counter {reason!r} to rise by {n}",
    )


def assert_lab_serves(lab: Lab) -> None:
    """Every lab minion answers test.ping through the real CLI; the master is alive."""
    assert lab.running()["master"], "the master process died"
    code, doc = run_json(lab, "*", "test.ping")
    assert code == 0, doc
    assert set(doc["returns"]) == ALL
    assert doc["missing"] == []
    assert all(r["success"] and r["return"] is True for r in doc["returns"].values())
