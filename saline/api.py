"""Framing of the local client API: 4-byte big-endian length, then one msgpack map.

The master serves it on a Unix socket (``master.clientapi``); the CLI speaks it through
``saline.client``. Requests are maps with an ``op``; replies are maps with a ``type``:
``result`` (one answer), or a stream of ``job`` / ``ret`` / ``event`` ... ending in
``done``; ``error`` carries a message for the operator.
"""

import struct
from typing import Any

from saline.errors import ProtocolError
from saline.wire import pack, unpack

API_VERSION = 1
#: where the CLI looks for the master's config, and the master for its client socket
DEFAULT_MASTER_CONFIG = "/etc/saline/master.yaml"
DEFAULT_SOCK_DIR = "/run/saline/master"
SOCKET_NAME = "client.sock"
#: replies may carry many returns of up to the minion frame cap each
MAX_API_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


def frame(message: dict[str, Any]) -> bytes:
    body = pack(message)
    return _HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_API_FRAME:
        raise ProtocolError("oversized", f"client frame of {length} bytes")
    return int(length)


def parse(body: bytes) -> dict[str, Any]:
    value = unpack(body, MAX_API_FRAME)
    if not isinstance(value, dict):
        raise ProtocolError("malformed", "client frame is not a map")
    return value
