"""Hostile and broken input on the master's minion socket: refused, counted, never fatal.

Every test talks to a real lab master over real ZeroMQ/CURVE from a DEALER of its own (or
a plain TCP socket), then checks the master's ``refusals`` counters through the client API
and, where it matters, that the lab minions still answer.
"""

import os
import secrets
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from zmq.utils.monitor import recv_monitor_message

from master.handlers import MAX_HELLO_BYTES
from saline.codec import decode_from_minion, encode, pack
from saline.errors import ClientError, ProtocolError
from saline.keys import KeyRing, KeyState
from saline.lab.lab import Lab
from saline.protocol import (
    JID_PATTERN,
    MINION_ID_PATTERN,
    MINION_KINDS,
    Ack,
    Bye,
    Heartbeat,
    Hello,
    Refused,
    Rehello,
    Return,
)
from tests.integration.peers import (
    ALL,
    CAP,
    MakeDealer,
    assert_lab_serves,
    key_in_ring,
    refusals,
    wait_counted,
)
from tests.support import run_json, status, wait_for

#: a frame msgpack never accepts (0xc1 is a reserved byte): the master refuses it at once
SENTINEL = b"\xc1sentinel"


# -- helpers --------------------------------------------------------------------------


def _expected_refusal(data: bytes) -> str:
    """The ``reason`` text of the Refused the master sends for an undecodable frame."""
    with pytest.raises(ProtocolError) as info:
        decode_from_minion(data, CAP)
    return str(info.value)


def frame_of_size(size: int, **fields: Any) -> bytes:
    """A well-formed protocol map padded by one bin field to exactly ``size`` bytes."""
    base = {"v": 1, "kind": "heartbeat", "id": "be1", **fields}
    frame = pack({**base, "pad": b"\0" * size})
    frame = pack({**base, "pad": b"\0" * (2 * size - len(frame))})  # bin32 header is fixed
    assert len(frame) == size
    return frame


# -- malformed, versions, kinds, sizes, framing -----------------------------------------


def test_malformed_msgpack_is_refused_counted_and_harmless(lab: Lab, dealer: MakeDealer) -> None:
    d = dealer()
    before = refusals(lab)
    garbage = b"\xc1\x00\xff not msgpack at all"
    d.send(garbage)
    reply = d.recv()
    assert isinstance(reply, Refused)
    assert reply.reason.startswith("malformed: ")
    assert reply == Refused(reason=_expected_refusal(garbage))
    after = wait_counted(lab, "malformed", before)
    assert after["handler_error"] == before["handler_error"]
    # the connection survives its own garbage: the next frame is judged on its own
    d.send(b"")
    assert d.recv() == Refused(reason=_expected_refusal(b""))
    assert_lab_serves(lab)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pack({"v": 2, "kind": "heartbeat", "id": "be1"}), "version"),
        (pack({"v": 0, "kind": "hello", "id": "be1"}), "version"),
        (pack({"kind": "heartbeat", "id": "be1"}), "version"),
        (pack({"v": 1, "kind": "exec", "id": "be1"}), "unknown_kind"),
        (pack({"v": 1, "kind": "job", "jid": "j", "fun": "cmd.run"}), "unknown_kind"),
        (pack({"v": 1, "id": "be1"}), "unknown_kind"),
        (pack({"v": 1, "kind": "heartbeat", "id": "../../etc"}), "invalid"),
        (pack({"v": 1, "kind": "heartbeat", "id": "be1", "admin": True}), "invalid"),
        (pack({"v": 1, "kind": "return", "id": "be1", "jid": "j"}), "invalid"),
        (pack([1, "heartbeat", "be1"]), "malformed"),
        (pack({"v": 1, "kind": "heartbeat", "id": "be1"})[:-1], "malformed"),
        (b"", "malformed"),
    ],
    ids=[
        "v2",
        "v0",
        "no-version",
        "unknown-kind",
        "master-kind-from-minion",
        "no-kind",
        "bad-id",
        "extra-field",
        "missing-fields",
        "not-a-map",
        "truncated",
        "empty",
    ],
)
def test_bad_frame_is_refused_with_its_reason(
    lab: Lab, dealer: MakeDealer, data: bytes, reason: str
) -> None:
    d = dealer()
    before = refusals(lab)
    d.send(data)
    reply = d.recv()
    assert reply == Refused(reason=_expected_refusal(data))
    assert isinstance(reply, Refused) and reply.reason.startswith(f"{reason}: ")
    wait_counted(lab, reason, before)


def test_unhashable_kind_is_refused_as_unknown_kind(lab: Lab, dealer: MakeDealer) -> None:
    d = dealer()
    before = refusals(lab)
    d.send(pack({"v": 1, "kind": ["heartbeat"], "id": "be1"}))
    d.send(SENTINEL)
    first = d.recv()
    after = refusals(lab)
    assert after["handler_error"] == before["handler_error"]
    assert isinstance(first, Refused) and first.reason.startswith("unknown_kind: "), first


def test_frame_over_the_cap_is_refused_as_oversized(lab: Lab, dealer: MakeDealer) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        before = refusals(lab)
        at_cap = frame_of_size(CAP, id=own_id)  # reaches the parser: the pad makes it invalid
        over_cap = frame_of_size(CAP + 1, id=own_id)  # refused on its size alone
        d.send(at_cap)
        reply = d.recv()
        assert isinstance(reply, Refused), reply
        assert reply.reason.startswith("invalid: heartbeat.pad"), reply
        d.send(over_cap)
        assert d.recv() == Refused(reason=f"oversized: frame of {CAP + 1} bytes exceeds cap {CAP}")
        after = wait_counted(lab, "oversized", before)
        assert after["oversized"] == before["oversized"] + 1
        assert after["invalid"] == before["invalid"] + 1


def test_a_key_not_accepted_may_only_send_small_frames(lab: Lab, dealer: MakeDealer) -> None:
    """It may only say hello: anything bigger than a hello is refused unparsed."""
    d = dealer()
    before = refusals(lab)
    d.send(frame_of_size(MAX_HELLO_BYTES + 1))
    limit = MAX_HELLO_BYTES
    assert d.recv() == Refused(reason=f"oversized: frame of {limit + 1} bytes exceeds cap {limit}")
    wait_counted(lab, "oversized", before)
    assert_lab_serves(lab)


def test_frame_over_the_transport_limit_drops_the_connection(lab: Lab, dealer: MakeDealer) -> None:
    """Above MAXMSGSIZE (2*cap+4096) libzmq drops the peer before the frame is read."""
    d = dealer()
    monitor = d.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    try:

        def event(expected: int) -> bool:
            return bool(monitor.poll(100)) and recv_monitor_message(monitor)["event"] == expected

        before = refusals(lab)
        wait_for(lambda: event(zmq.EVENT_HANDSHAKE_SUCCEEDED), 5, "CURVE handshake")
        d.send(b"\xc4" + b"\0" * (2 * CAP + 8192))
        wait_for(lambda: event(zmq.EVENT_DISCONNECTED), 10, "the master to drop the peer")
    finally:
        d.sock.disable_monitor()
        monitor.close(linger=0)
    # the master still serves others, and the frame never reached the codec
    other = dealer()
    other.send(SENTINEL)
    assert other.recv() == Refused(reason=_expected_refusal(SENTINEL))
    after = refusals(lab)
    assert after["oversized"] == before["oversized"]
    assert after["handler_error"] == before["handler_error"]
    assert not any(isinstance(m, Refused) and "oversized" in m.reason for m in d.waiting())
    assert lab.running()["master"]


def test_multipart_message_is_malformed(lab: Lab, dealer: MakeDealer) -> None:
    d = dealer()
    before = refusals(lab)
    d.sock.send_multipart([encode(Heartbeat(id="be1")), b"second frame"])
    d.sock.send_multipart([b"a", b"b", b"c"])
    d.send(SENTINEL)
    # multipart messages are counted without a reply: the first reply is the sentinel's
    assert d.recv() == Refused(reason=_expected_refusal(SENTINEL))
    after = wait_counted(lab, "malformed", before, 3)
    assert after["malformed"] == before["malformed"] + 3
    assert d.waiting() == []


# -- who may say what -----------------------------------------------------------------


def test_accepted_key_cannot_speak_for_another_minion(lab: Lab, dealer: MakeDealer) -> None:
    code, doc = run_json(lab, "be2", "test.ping")
    assert code == 0 and set(doc["returns"]) == {"be2"}
    real_jid = doc["jid"]
    unknown_jid = f"forged-{secrets.token_hex(6)}"
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        # control: the key is accepted and the path works for its own id
        control_jid = f"control-{secrets.token_hex(6)}"
        d.send(Return(jid=control_jid, id=own_id, fun="test.ping", success=True, retcode=0))
        assert d.recv() == Ack(jids=[control_jid])
        d.send(Heartbeat(id=own_id))
        assert d.recv() == Rehello()  # accepted, but no session yet

        before = refusals(lab)
        forged = {"fun": "test.ping", "success": False, "retcode": 99, "ret": "forged"}
        d.send(Heartbeat(id="be1"))
        assert d.recv() == Refused(reason="id_mismatch")
        d.send(Return(jid=real_jid, id="be1", **forged))
        assert d.recv() == Refused(reason="id_mismatch")
        d.send(Return(jid=unknown_jid, id="be1", **forged))
        assert d.recv() == Refused(reason="id_mismatch")
        d.send(Bye(id="be1"))
        assert d.recv() == Refused(reason="id_mismatch")
        d.send(Hello(id="be1", grains={"role": "frontend"}))
        assert d.recv() == Refused(reason=f"this key belongs to {own_id!r}")
        after = wait_counted(lab, "id_mismatch", before, 5)
        assert after["id_mismatch"] == before["id_mismatch"] + 5

        with lab.client() as client:
            shown = client.request("job_show", jid=real_jid)
            assert set(shown["returns"]) == {"be2"}
            assert "forged" not in repr(shown)
            with pytest.raises(ClientError, match="no job"):
                client.request("job_show", jid=unknown_jid)
        # be1 kept its session and its grains: jobs still reach the real be1, not us
        assert "be1" in status(lab)["online"]
        code, doc = run_json(lab, "be1", "grains.get", "role")
        assert code == 0 and doc["returns"]["be1"]["return"] == "backend"
        assert d.waiting() == []


@contextmanager
def maybe_key(lab: Lab, state: KeyState | None) -> Iterator[tuple[str | None, bytes, bytes]]:
    """``key_in_ring`` for a state, or a key the master never saw (id None) for None."""
    if state is None:
        public, secret = zmq.curve_keypair()
        yield None, public, secret
        return
    with key_in_ring(lab, state) as (own_id, public, secret):
        yield own_id, public, secret


@pytest.mark.parametrize("state", [None, KeyState.PENDING], ids=["unknown", "pending"])
def test_key_not_accepted_may_only_say_hello(
    lab: Lab, dealer: MakeDealer, state: KeyState | None
) -> None:
    messages: list[BaseModel] = [
        Heartbeat(id="be1"),
        Return(jid="j-not-accepted", id="be1", fun="test.ping", success=True, retcode=0),
        Bye(id="be1"),
    ]
    with maybe_key(lab, state) as (own_id, public, secret):
        d = dealer(public, secret)
        if own_id is not None:  # a pending key is refused even for its own id
            messages.append(Heartbeat(id=own_id))
        before = refusals(lab)
        for message in messages:
            d.send(message)
            assert d.recv() == Refused(reason="not_accepted"), message
        after = wait_counted(lab, "not_accepted", before, len(messages))
        assert after["not_accepted"] == before["not_accepted"] + len(messages)
    assert "be1" in status(lab)["online"]  # the refused bye did not log be1 out


def test_rejected_key_is_refused_at_the_handshake(lab: Lab, dealer: MakeDealer) -> None:
    with key_in_ring(lab, KeyState.REJECTED) as (_own_id, public, secret):
        before = refusals(lab)
        d = dealer(public, secret)
        d.send(Heartbeat(id="be1"))
        after = wait_counted(lab, "handshake_refused", before)
        wait_counted(lab, "handshake_failed", before)
        d.close()
        assert after["not_accepted"] == before["not_accepted"]  # never got past ZAP


# -- no CURVE at all --------------------------------------------------------------------

_ZMTP_NULL_GREETING = (
    b"\xff" + b"\0" * 8 + b"\x7f"  # signature
    + b"\x03\x00"  # ZMTP 3.0
    + b"NULL".ljust(20, b"\0")  # mechanism the server does not speak
    + b"\0"  # as-server
    + b"\0" * 31  # filler
)  # fmt: skip


def _raw_tcp(lab: Lab, payload: bytes) -> None:
    """Send ``payload`` on a plain TCP connection, then read until the master hangs up.

    The master may drop the connection before everything is sent: that is its right.
    """
    with socket.create_connection(("127.0.0.1", int(lab.state["port"])), timeout=5) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
        except OSError:
            pass


def test_plain_tcp_garbage_does_not_disturb_the_master(lab: Lab, dealer: MakeDealer) -> None:
    before = refusals(lab)
    # a ZMTP peer offering the NULL mechanism: a protocol handshake failure, counted
    _raw_tcp(lab, _ZMTP_NULL_GREETING)
    wait_counted(lab, "handshake_failed", before)
    # things that are not ZMTP at all: the master just drops them (not always counted)
    for payload in [
        os.urandom(256),
        b"GET / HTTP/1.1\r\nHost: saline\r\n\r\n",
        b"\xff" + os.urandom(4096),
        _ZMTP_NULL_GREETING[:11],
        b"",
        os.urandom(1 << 20),
    ]:
        _raw_tcp(lab, payload)
    after = refusals(lab)
    assert after["handler_error"] == before["handler_error"]
    d = dealer()
    d.send(SENTINEL)
    assert d.recv() == Refused(reason=_expected_refusal(SENTINEL))
    assert_lab_serves(lab)


# -- fuzzing --------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=16)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_ids = st.sampled_from(sorted(ALL)) | st.from_regex(MINION_ID_PATTERN, fullmatch=True)
_maps = st.fixed_dictionaries(
    {
        # mostly right, so that frames get past the envelope checks to field validation
        "v": st.sampled_from([1] * 6 + [2, 0, "1", None]),
        "kind": st.sampled_from([*sorted(MINION_KINDS) * 3, "job", "welcome", "", "x"]),
    },
    optional={
        "id": _ids | _values,
        "jid": st.text(max_size=70) | _values,
        "fun": _values,
        "success": _values,
        "retcode": _values,
        "ret": _values,
        "grains": _values,
        "extra": _values,
    },
)
_forgeries = (
    st.builds(Heartbeat, id=_ids)
    | st.builds(Bye, id=_ids)
    | st.builds(Hello, id=_ids, grains=st.dictionaries(st.text(max_size=6), _values))
    | st.builds(
        Return,
        jid=st.from_regex(JID_PATTERN, fullmatch=True),
        id=_ids,
        fun=st.text(max_size=32),
        success=st.booleans(),
        retcode=st.integers(min_value=-(2**31), max_value=2**31 - 1),
        ret=_values,
    )
)
_frames = st.binary(max_size=300) | _maps.map(pack) | _forgeries.map(encode)


def test_fuzzed_frames_from_an_accepted_key(lab: Lab, dealer: MakeDealer) -> None:
    sent: Counter[str] = Counter()
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        before = refusals(lab)

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(data=_frames)
        def one_frame(data: bytes) -> None:
            try:
                message = decode_from_minion(data, CAP)
            except ProtocolError as e:
                reason, text = e.reason, str(e)
            else:
                # a valid frame for the key's own id would be served, not refused
                assume(getattr(message, "id", None) != own_id)
                reason = "id_mismatch"
                hello = isinstance(message, Hello)
                text = f"this key belongs to {own_id!r}" if hello else "id_mismatch"
            d.send(data)
            assert d.recv() == Refused(reason=text)
            sent[reason] += 1

        one_frame()
        after = refusals(lab)
        assert sum(sent.values()) >= 30
        for reason, n in sent.items():
            assert after[reason] - before[reason] >= n, (reason, n, before, after)
        assert after["handler_error"] == before["handler_error"]
        assert d.waiting() == []
    assert_lab_serves(lab)


# -- a bug that kills the master (dedicated lab) ----------------------------------------


def test_return_with_huge_retcode_does_not_kill_the_master(
    fresh_lab: Lab, dealer: MakeDealer
) -> None:
    lab = fresh_lab
    public, secret = zmq.curve_keypair()
    KeyRing(lab.directory / "master" / "pki").add("huge", public.decode(), KeyState.ACCEPTED)
    wait_for(lambda: "huge" in status(lab)["keys"]["accepted"], 5, "the key accepted")
    d = dealer(public, secret, on=lab)
    fields = {"jid": "huge", "id": "huge", "fun": "test.ping", "success": True}
    d.send(pack({"v": 1, "kind": "return", **fields, "retcode": 2**63}))
    # the master refuses the return as invalid (or stores and acknowledges it)
    wait_for(lambda: d.sock.poll(0) or not lab.running()["master"], 10, "a reply or a death")
    assert lab.running()["master"], "the master died of one return"
    assert isinstance(d.recv(), Refused | Ack)
    d.send(SENTINEL)
    assert d.recv() == Refused(reason=_expected_refusal(SENTINEL))
    assert lab.running()["master"]
