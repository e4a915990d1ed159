"""msgpack framing for protocol messages: bytes in, one validated model out (or ProtocolError)."""

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from saline.errors import ProtocolError
from saline.protocol import (
    MASTER_KINDS,
    MINION_KINDS,
    PROTOCOL_VERSION,
    MasterMessage,
    MinionMessage,
)
from saline.wire import pack, unpack

_MINION = TypeAdapter[Any](MinionMessage)
_MASTER = TypeAdapter[Any](MasterMessage)

M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Serialise one protocol message to a msgpack map."""
    return pack(message.model_dump())


def _decode(data: bytes, max_size: int, kinds: frozenset[str], adapter: TypeAdapter[Any]) -> Any:
    raw = unpack(data, max_size)
    if not isinstance(raw, dict):
        raise ProtocolError("malformed", "frame is not a map")
    version = raw.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise ProtocolError("unknown_kind", f"unknown message kind {str(kind)[:64]!r}")
    try:
        return adapter.validate_python(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise ProtocolError("invalid", f"{kind}.{where}: {first['msg']}") from e


def decode_from_minion(data: bytes, max_size: int) -> MinionMessage:
    """Decode a frame a minion sent to the master."""
    result: MinionMessage = _decode(data, max_size, MINION_KINDS, _MINION)
    return result


def decode_from_master(data: bytes, max_size: int) -> MasterMessage:
    """Decode a frame the master sent to a minion."""
    result: MasterMessage = _decode(data, max_size, MASTER_KINDS, _MASTER)
    return result
