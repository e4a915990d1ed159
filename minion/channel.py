"""A running job's line to the master: files and pillar, relayed by the minion process.

Jobs run in forked children, which must not touch the minion's ZeroMQ socket. A child
asks over a socketpair (``PipeChannel``); the minion process relays the request to the
master on its authenticated link and writes the answer back (``serve_child``).
"""

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from saline.api import HEADER_SIZE, frame, frame_length, parse
from saline.errors import SalineError

#: (request map) -> reply map; provided by the minion daemon, talks to the master
Relay = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ChannelError(SalineError):
    """The master could not be asked (no link, no answer in time)."""


class MasterChannel(Protocol):
    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """``op`` is ``file`` (path, have) or ``pillar``; returns the master's reply fields."""
        ...


class PipeChannel:
    """The child's end: blocking request/reply over its socketpair."""

    def __init__(self, sock: socket.socket, timeout: float = 30.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)

    def _read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ChannelError("the minion closed the channel")
            data += chunk
        return bytes(data)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            self.sock.sendall(frame({"op": op, **fields}))
            reply = parse(self._read(frame_length(self._read(HEADER_SIZE))))
        except TimeoutError as e:
            raise ChannelError(f"no answer from the master for {op}") from e
        except OSError as e:
            raise ChannelError(f"channel to the minion failed: {e}") from e
        if reply.get("error"):
            raise ChannelError(str(reply["error"]))
        return reply


async def serve_child(sock: socket.socket, relay: Relay) -> None:
    """Answer the child's requests until it closes its end (it exits)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    buffer = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(sock, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= HEADER_SIZE:
            length = frame_length(bytes(buffer[:HEADER_SIZE]))
            if len(buffer) < HEADER_SIZE + length:
                break
            request = parse(bytes(buffer[HEADER_SIZE : HEADER_SIZE + length]))
            del buffer[: HEADER_SIZE + length]
            try:
                reply = await relay(request)
            except SalineError as e:
                reply = {"error": str(e)}
            with contextlib.suppress(OSError):
                await loop.sock_sendall(sock, frame(reply))
