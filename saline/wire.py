"""msgpack with the options saline uses everywhere; no models, so light to import (the CLI)."""

from typing import Any

import msgpack

from saline.errors import ProtocolError

#: default cap on one frame, bytes (16 MiB)
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
#: what a minion id may look like (also a safe file name: no '/', no leading '.')
MINION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def pack(value: Any) -> bytes:
    """msgpack with str as str and bytes as bin."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes, max_size: int) -> Any:
    """Parse msgpack bytes, refusing oversized input before parsing it."""
    if len(data) > max_size:
        raise ProtocolError("oversized", f"frame of {len(data)} bytes exceeds cap {max_size}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ProtocolError("malformed", f"not msgpack ({type(e).__name__})") from e
