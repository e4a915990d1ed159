"""saline.codec: every protocol message round-trips; every bad frame is one ProtocolError."""

import inspect
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from saline import protocol
from saline.codec import decode_from_master, decode_from_minion, encode, pack, unpack
from saline.errors import ProtocolError
from saline.protocol import (
    DEFAULT_MAX_FRAME,
    MASTER_KINDS,
    MINION_KINDS,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    Event,
    FileReply,
    FileRequest,
    Heartbeat,
    Hello,
    Job,
    Pending,
    PillarReply,
    PillarRequest,
    Refused,
    Rehello,
    Return,
    Welcome,
)

CAP = DEFAULT_MAX_FRAME

MINION_SAMPLES: list[BaseModel] = [
    Hello(id="be1", grains={"role": "backend", "cpus": 4, "tags": ["a", "b"]}, version="0.1.0"),
    Hello(id="x"),
    Heartbeat(id="fe-2.example_com"),
    Return(
        jid="20240101000000000001",
        id="be1",
        fun="cmd.run",
        success=False,
        retcode=3,
        ret={"stdout": "", "stderr": "boom", "raw": b"\x00\xff", "nested": [1, 2.5, None]},
        duration_ms=12.5,
    ),
    Return(jid="j", id="be2", fun="test.ping", success=True, retcode=0, ret=True),
    Bye(id="be2"),
    FileRequest(id="be1", req=7, path="chef_backend/init.yaml", have="ab" * 32),
    PillarRequest(id="fe1", req=8),
    Event(
        id="be2", eid="00000001-1", tag="saline/beacon/be2/service/stopped", data={"name": "etcd"}
    ),
]
MASTER_SAMPLES: list[BaseModel] = [
    Welcome(id="be1", master_version="0.1.0"),
    Pending(reason="key of be1 is pending acceptance"),
    Refused(reason="key rejected"),
    Rehello(),
    Job(
        jid="20240101000000000001",
        fun="file.write",
        args=["/tmp/x", "hello"],
        kwargs={"mode": "0600", "opts": {"a": [1, 2]}},
        timeout=2.5,
    ),
    Job(jid="j2", fun="test.ping"),
    Ack(jids=["j1", "j2"]),
    Ack(jids=[]),
    Ack(events=["00000001-1"]),
    FileReply(req=7, path="top.yaml", sha256="cd" * 32, data=b"base: {}\n"),
    FileReply(req=7, path="../etc/passwd", error="path escapes the file roots"),
    PillarReply(req=8, pillar={"secrets": {"pw": "x"}}, secrets=["x"]),
]


def _reason(data: bytes, decode: Any = decode_from_minion, cap: int = CAP) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(data, cap)
    assert str(info.value).startswith(info.value.reason)
    return info.value.reason


def _frame(**fields: Any) -> bytes:
    return pack({"v": PROTOCOL_VERSION, **fields})


# -- round trips ----------------------------------------------------------------------


def test_samples_cover_every_message_class_of_the_protocol() -> None:
    classes = {
        obj
        for _, obj in inspect.getmembers(protocol, inspect.isclass)
        if issubclass(obj, protocol._Message) and obj is not protocol._Message
    }
    assert {type(m) for m in MINION_SAMPLES + MASTER_SAMPLES} == classes
    assert {m.kind for m in MINION_SAMPLES} == MINION_KINDS  # type: ignore[attr-defined]
    assert {m.kind for m in MASTER_SAMPLES} == MASTER_KINDS  # type: ignore[attr-defined]


@pytest.mark.parametrize("message", MINION_SAMPLES, ids=lambda m: m.kind)
def test_minion_messages_round_trip(message: BaseModel) -> None:
    data = encode(message)
    decoded = decode_from_minion(data, CAP)
    assert type(decoded) is type(message)
    assert decoded == message
    # a minion message is never mistaken for a master message (and vice versa below)
    assert _reason(data, decode_from_master) == "unknown_kind"


@pytest.mark.parametrize("message", MASTER_SAMPLES, ids=lambda m: m.kind)
def test_master_messages_round_trip(message: BaseModel) -> None:
    data = encode(message)
    decoded = decode_from_master(data, CAP)
    assert type(decoded) is type(message)
    assert decoded == message
    assert _reason(data, decode_from_minion) == "unknown_kind"


def test_encode_is_a_versioned_msgpack_map() -> None:
    raw = msgpack.unpackb(encode(Heartbeat(id="be1")), raw=False)
    assert raw == {"v": PROTOCOL_VERSION, "kind": "heartbeat", "id": "be1"}


# -- one reason per kind of bad frame ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x81",  # a map announcing one entry, then nothing
        pack({"v": 1, "kind": "heartbeat", "id": "be1"}) + b"\x00",  # trailing data
        pack({"v": 1, "kind": "heartbeat", "id": "be1"})[:-2],  # truncated
        msgpack.packb({1: 2}),  # non-string map key (strict_map_key)
        b"\x81\xa1v\xa2\xff\xfe",  # a str that is not UTF-8
        pack([1, "heartbeat", "be1"]),  # not a map
        pack("hello"),
        pack(None),
        pack(1),
    ],
)
def test_malformed(data: bytes) -> None:
    assert _reason(data) == "malformed"
    assert _reason(data, decode_from_master) == "malformed"


@pytest.mark.parametrize("version", [2, 0, -1, None, "1", b"\x01", [1]])
def test_version(version: Any) -> None:
    assert _reason(pack({"v": version, "kind": "heartbeat", "id": "be1"})) == "version"
    assert _reason(pack({"v": version, "kind": "rehello"}), decode_from_master) == "version"


def test_missing_version_is_a_version_error() -> None:
    assert _reason(pack({"kind": "heartbeat", "id": "be1"})) == "version"


@pytest.mark.parametrize("kind", ["nope", "", "HELLO", None, 7, 1.5, b"hello", True])
def test_unknown_kind(kind: Any) -> None:
    assert _reason(_frame(kind=kind, id="be1")) == "unknown_kind"
    assert _reason(_frame(kind=kind), decode_from_master) == "unknown_kind"


def test_missing_kind_is_unknown() -> None:
    assert _reason(_frame(id="be1")) == "unknown_kind"


def test_unknown_kind_detail_is_bounded() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_from_minion(_frame(kind="k" * 10_000), CAP)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("kind", [[], {}, ["hello"]])
def test_unhashable_kind_is_unknown(kind: Any) -> None:
    assert _reason(_frame(kind=kind, id="be1")) == "unknown_kind"


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "heartbeat"},  # id missing
        {"kind": "heartbeat", "id": ""},
        {"kind": "heartbeat", "id": "../etc/passwd"},
        {"kind": "heartbeat", "id": "a" * 129},
        {"kind": "heartbeat", "id": 12},
        {"kind": "heartbeat", "id": "be1", "extra": 1},  # extra fields are forbidden
        {"kind": "hello", "id": "be1", "grains": [1, 2]},
        {"kind": "return", "id": "be1", "jid": "j", "fun": "f", "success": True},  # no retcode
        {
            "kind": "return",
            "id": "be1",
            "jid": "j" * 65,
            "fun": "f",
            "success": True,
            "retcode": 0,
        },
        {"kind": "return", "id": "be1", "jid": "j", "fun": "f", "success": "maybe", "retcode": 0},
        {"kind": "return", "id": "be1", "jid": "j", "fun": "f", "success": True, "retcode": "x"},
        {"kind": "bye", "id": None},
    ],
)
def test_invalid_minion_message(fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_from_minion(_frame(**fields), CAP)
    assert info.value.reason == "invalid"
    assert str(info.value).startswith(f"invalid: {fields['kind']}.")


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "job", "jid": "j", "fun": "test.ping", "timeout": 0},
        {"kind": "job", "jid": "j", "fun": "test.ping", "args": "x"},
        {"kind": "job", "fun": "test.ping"},
        {"kind": "ack", "jids": "j1"},
        {"kind": "welcome"},
        {"kind": "rehello", "reason": "x"},
    ],
)
def test_invalid_master_message(fields: dict[str, Any]) -> None:
    assert _reason(_frame(**fields), decode_from_master) == "invalid"


def test_oversized_is_refused_before_parsing() -> None:
    frame = encode(Heartbeat(id="be1"))
    assert decode_from_minion(frame, len(frame)) == Heartbeat(id="be1")  # the cap is inclusive
    assert _reason(frame, cap=len(frame) - 1) == "oversized"
    # refused on its size alone: garbage over the cap is oversized, not malformed
    assert _reason(b"\xc1" * 2048, cap=1024) == "oversized"
    assert _reason(b"\xc1" * 2048, decode_from_master, cap=1024) == "oversized"
    with pytest.raises(ProtocolError) as info:
        unpack(b"\x00" * 11, 10)
    assert info.value.reason == "oversized"


def _frame_of_size(size: int) -> bytes:
    """A well-formed heartbeat map (with one extra bin field) of exactly ``size`` bytes."""
    pad = size
    frame = pack({"v": 1, "kind": "heartbeat", "id": "be1", "pad": b"\0" * pad})
    pad += size - len(frame)  # the bin32 header is the same size for every large pad
    frame = pack({"v": 1, "kind": "heartbeat", "id": "be1", "pad": b"\0" * pad})
    assert len(frame) == size
    return frame


def test_default_cap_boundary() -> None:
    frame = _frame_of_size(CAP + 1)
    assert _reason(frame) == "oversized"
    assert _reason(frame[:-1]) == "malformed"  # truncated to the cap: parsed, not oversized
    assert _reason(frame, cap=CAP + 1) == "invalid"  # under a larger cap the extra field is
    assert _reason(_frame_of_size(CAP)) == "invalid"


# -- properties -----------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_KINDS = sorted(MINION_KINDS | MASTER_KINDS)
_FIELDS = ["id", "jid", "fun", "success", "retcode", "ret", "grains", "version", "args"]
_FIELDS += ["kwargs", "timeout", "jids", "reason", "master_version", "duration_ms"]
_messages = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 1, 2]) | _scalars,
        "kind": st.sampled_from(_KINDS) | _scalars,
        **{name: _values for name in _FIELDS},
        "extra": _values,
    },
)


def _check(decode: Any, data: bytes) -> None:
    try:
        message = decode(data, CAP)
    except ProtocolError as e:
        assert e.reason in {"malformed", "version", "unknown_kind", "invalid", "oversized"}
        return
    assert isinstance(message, protocol._Message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_protocol_error(data: bytes) -> None:
    _check(decode_from_minion, data)
    _check(decode_from_master, data)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_arbitrary_maps_only_raise_protocol_error(raw: dict[str, Any]) -> None:
    data = pack(raw)
    _check(decode_from_minion, data)
    _check(decode_from_master, data)
    # a truncated frame is never silently accepted
    if len(data) > 1:
        with pytest.raises(ProtocolError):
            decode_from_minion(data[: len(data) // 2], CAP)
