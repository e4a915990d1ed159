"""A real master's log: ``--log-format json`` lines, and handshake failures naming the
peer's ``ip:port`` (a plain TCP client sending garbage, a CURVE client with a wrong master
key, a key ZAP refuses)."""

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from saline.keys import KeyRing, KeyState, read_keypair
from saline.lab.lab import Lab, free_port
from saline.lab.processes import spawn
from tests.support import status, wait_for

#: a ZMTP 3.0 greeting offering the NULL mechanism: a protocol failure at the handshake
NULL_GREETING = (
    b"\xff" + b"\0" * 8 + b"\x7f"  # signature
    + b"\x03\x00"  # ZMTP 3.0
    + b"NULL".ljust(20, b"\0")  # mechanism the master does not speak
    + b"\0"  # as-server
    + b"\0" * 31  # filler
)  # fmt: skip


@dataclass
class JsonMaster:
    lab: Lab
    port: int

    @property
    def log(self) -> Path:
        return self.lab.directory / "logs" / "master.log"

    def records(self) -> list[dict[str, Any]]:
        """Every complete line of the log, parsed (a line being written is left for later)."""
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def messages(self, *parts: str) -> list[str]:
        found = [str(r["message"]) for r in self.records()]
        return [m for m in found if all(p in m for p in parts)]


@pytest.fixture
def master(tmp_path: Path) -> Iterator[JsonMaster]:
    """A master of its own (no minions), run as ``saline -l debug master --log-format json``."""
    lab = Lab(tmp_path / "lab")
    port = free_port()
    lab.write_layout(0, port, None)
    config = str(lab.master_config)
    argv = [sys.executable, "-m", "saline.cli.main", "-c", config, "-l", "debug", "master"]
    pid = spawn([*argv, "--log-format", "json"], lab.directory / "logs" / "master.out")
    lab.state["master"] = {"pid": pid, "marker": config}
    lab.save()
    running = JsonMaster(lab, port)
    try:
        wait_for(lambda: running.messages("master ready on"), 30, "the master ready")
        yield running
    finally:
        lab.down()


def test_the_master_logs_one_json_object_per_line(master: JsonMaster) -> None:
    records = master.records()
    assert len(records) >= 2
    for record in records:
        assert {"ts", "level", "logger", "message", "pid"} <= set(record), record
        assert record["level"] in {"debug", "info", "warning", "error"}
        assert record["process"] == "saline-master"
        assert str(record["ts"]).endswith("+00:00")
    [ready] = [r for r in records if "master ready on" in r["message"]]
    assert ready["level"] == "info"
    assert ready["logger"] == "master.daemon"
    assert f"tcp://127.0.0.1:{master.port}" in ready["message"]
    assert any(r["level"] == "debug" for r in records)  # -l debug reached the handler
    assert (master.lab.directory / "logs" / "master.out").read_text() == ""


def test_garbage_after_the_greeting_is_logged_with_the_peer(master: JsonMaster) -> None:
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as client:
        peer = f"127.0.0.1:{client.getsockname()[1]}"
        wait_for(lambda: master.messages(f"connection from {peer}"), 10, "the accept seen")
        client.sendall(NULL_GREETING)
        [line] = wait_for(lambda: master.messages("handshake failed", peer), 10, "the failure")
    assert "not CURVE" in line
    assert status(master.lab)["refusals"]["handshake_failed"] == 1


@dataclass
class Relay:
    """One TCP connection relayed to the master, held until the test says ``go``: the
    master sees the relay's upstream socket as the client's."""

    master_port: int
    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    connected: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    peer: str = ""

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def start(self) -> "Relay":
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        self.listener.close()  # one connection: the client's reconnects are refused
        upstream = socket.create_connection(("127.0.0.1", self.master_port))
        self.peer = f"127.0.0.1:{upstream.getsockname()[1]}"
        self.connected.set()
        self.go.wait(30)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _curve_client(ctx: zmq.Context[Any], server_public: bytes, port: int) -> zmq.Socket[Any]:
    public, secret = zmq.curve_keypair()
    dealer: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    dealer.setsockopt(zmq.CURVE_PUBLICKEY, public)
    dealer.setsockopt(zmq.CURVE_SECRETKEY, secret)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    return dealer


def test_a_wrong_master_key_is_logged_with_the_peer(master: JsonMaster) -> None:
    relay = Relay(master.port).start()
    ctx: zmq.Context[Any] = zmq.Context()
    wrong_key, _ = zmq.curve_keypair()
    dealer = _curve_client(ctx, wrong_key, relay.port)
    try:
        assert relay.connected.wait(10)
        wait_for(lambda: master.messages(f"connection from {relay.peer}"), 10, "the accept")
        relay.go.set()
        lines = wait_for(lambda: master.messages("handshake failed", relay.peer), 10, "failure")
    finally:
        dealer.close()
        ctx.term()
    assert len(lines) == 1
    assert "cannot decrypt: wrong master key?" in lines[0]


def test_a_rejected_key_is_logged_with_the_peer_address(master: JsonMaster) -> None:
    public, secret = zmq.curve_keypair()
    KeyRing(master.lab.directory / "master" / "pki").add(
        "banned", public.decode(), KeyState.REJECTED
    )
    wait_for(lambda: "banned" in status(master.lab)["keys"]["rejected"], 10, "the key rejected")
    server = read_keypair(master.lab.directory / "master" / "pki", "master").public.encode()
    ctx: zmq.Context[Any] = zmq.Context()
    dealer: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.CURVE_SERVERKEY, server)
    dealer.setsockopt(zmq.CURVE_PUBLICKEY, public)
    dealer.setsockopt(zmq.CURVE_SECRETKEY, secret)
    dealer.connect(f"tcp://127.0.0.1:{master.port}")
    try:
        # ZAP is told the peer's IP (no port) and names it with the key's minion
        wait_for(lambda: master.messages("127.0.0.1", "rejected key of minion banned"), 10, "ZAP")
        wait_for(lambda: master.messages("handshake refused (ZAP status 400)"), 10, "the monitor")
    finally:
        dealer.close()
        ctx.term()


def test_a_peer_failing_at_once_is_counted_and_never_named_wrongly(master: JsonMaster) -> None:
    peers = []
    for _ in range(4):  # the master logs the first 5 refusals of a kind
        with socket.create_connection(("127.0.0.1", master.port), timeout=10) as client:
            peers.append(f"127.0.0.1:{client.getsockname()[1]}")
            client.sendall(NULL_GREETING)  # before the master could read the accepted socket
            try:
                while client.recv(4096):
                    pass
            except OSError:
                pass
    lines = wait_for(
        lambda: len(found := master.messages("handshake failed")) == 4 and found, 10, "4 lines"
    )
    for line, peer in zip(lines, peers, strict=True):
        # named, then rightly; or said to be unknown
        assert line.endswith(f"from {peer}") or "from an unknown peer" in line, (line, peers)
