"""The socket minions connect to: a CURVE ROUTER, read in batches, written without blocking.

Every send and receive goes through the plain pyzmq socket (5x cheaper per message than its
asyncio layer), followed by a readiness check: zmq's FD is edge-triggered.

Failed handshakes come from libzmq's socket monitor, read by a thread of its own
(:class:`HandshakeWatch`) so that it can name the peer's address.
"""

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections import Counter, deque

import zmq
import zmq.asyncio
from pydantic import BaseModel

from saline.codec import encode
from saline.keys import KeyPair
from saline.transport import bind_router

#: most frames handled (and returns committed) per pass over the socket
BATCH_FRAMES = 2000
#: ... and at most about this many bytes of them
BATCH_BYTES = 64 * 1024 * 1024
_POLLIN = int(zmq.POLLIN)  # a plain int: IntFlag arithmetic shows in profiles
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

log = logging.getLogger(__name__)


class MinionSocket:
    def __init__(self) -> None:
        self._router: zmq.asyncio.Socket | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._watch: HandshakeWatch | None = None
        self._readable = asyncio.Event()
        #: (frames, bytes) of the last batch read: a full one means a backlog (metrics)
        self.last_batch = (0, 0)

    def bind(
        self, ctx: zmq.asyncio.Context, keypair: KeyPair, address: str, max_frame_bytes: int
    ) -> None:
        self._router = bind_router(ctx, keypair, address, max_frame_bytes)
        self._sock = zmq.Socket.shadow(self._router.underlying)
        self._watch = HandshakeWatch(ctx, self._sock)
        asyncio.get_running_loop().add_reader(self._sock.FD, self._readable.set)

    def reply(self, route: bytes, message: BaseModel) -> bool:
        """Send to one connection; False when it is gone (ROUTER_MANDATORY) or backed up."""
        return self.send_frame(route, encode(message))

    def send_frame(self, route: bytes, frame: bytes) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.send_multipart([route, frame], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        finally:
            # a send may consume the FD's edge: wake the receive loop so it looks at the
            # socket again instead of sleeping on waiting frames
            self._readable.set()
        return True

    async def receive(self) -> list[list[zmq.Frame]]:
        """The next batch of frames (at least one): at most BATCH_FRAMES and ~BATCH_BYTES."""
        assert self._sock is not None, "bind() first"
        sock = self._sock
        while True:
            self._readable.clear()
            if int(sock.get(zmq.EVENTS)) & _POLLIN:
                break
            await self._readable.wait()
        frames_batch: list[list[zmq.Frame]] = []
        held = 0  # bytes: 2,000 frames of 16 MiB must not all be held at once
        while len(frames_batch) < BATCH_FRAMES and held < BATCH_BYTES:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            frames_batch.append(frames)
            held += sum(len(f) for f in frames)
        self.last_batch = (len(frames_batch), held)
        return frames_batch

    async def handshake_failure(self) -> str:
        """Wait for the next failed handshake (a peer not speaking CURVE, a wrong master key,
        a key ZAP refused): what failed, and from which ``ip:port`` (see HandshakeWatch)."""
        assert self._watch is not None, "bind() first"
        return await self._watch.failure()

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.FD)
        if self._watch is not None:
            self._watch.close()
        if self._router is not None:
            self._router.close()


#: what the monitor reports: failed handshakes, the connections they happen on, its end
MONITORED = (
    HANDSHAKE_FAILURES | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED
)
#: monitor events held unread before libzmq drops new ones (its default is 1,000: a few
#: hundred minions reconnecting at once would overflow it); ~100 bytes each
MONITOR_HWM = 100_000
#: failures described and not yet taken by the master's loop (beyond: counted, not kept)
MAX_QUEUED_FAILURES = 10_000
#: seconds to wait for the disconnect that follows a failed handshake
_DISCONNECT_WAIT_MS = 1000
_PROTOCOL_ERRORS: dict[int, str] = {
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "cannot decrypt: wrong master key?",
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "not CURVE",
}


class HandshakeWatch:
    """Failed handshakes of a bound socket, described with the peer's ``ip:port`` when it is
    known for sure.

    libzmq's monitor names only the listening endpoint in a failure. The peer comes from the
    connection's fd: EVENT_ACCEPTED carries it, and its address is read at once (on a dup)
    by this object's thread, which does nothing else, so that it reads before a failing
    peer is gone; the failing connection then reports EVENT_DISCONNECTED with its fd right
    after the failure, from the same libzmq I/O thread. An address is trusted only when no
    disconnect of that fd was queued by the time it was read (libzmq queues the disconnect
    before it closes the fd, and a closed fd may be reused by the next connection).

    What stays unknown, and is said so in the description:

    * a peer gone before its accepted socket was read (it failed within microseconds of
      connecting, or this thread was held up);
    * a key refused by ZAP: libzmq disconnects only after sending the refusal, so other
      connections' events come between; ZAP's own refusal names the peer's IP (ZAP is
      given no port);
    * bytes that are not ZMTP at all (garbage before the greeting): libzmq reports only a
      disconnect, no failed handshake, so such a peer is neither counted nor logged;
    * with more than one libzmq I/O thread, events of two connections may interleave: no
      failure is paired with a disconnect then;
    * what libzmq dropped: it drops monitor events when ``MONITOR_HWM`` wait unread.
    """

    def __init__(self, ctx: zmq.asyncio.Context, bound: zmq.Socket[bytes]) -> None:
        endpoint = bound.getsockopt_string(zmq.LAST_ENDPOINT)
        #: an accepted connection's local port is the bound one
        self._port = int(endpoint.rsplit(":", 1)[1])
        self._pairable = int(ctx.get(zmq.IO_THREADS)) == 1
        address = f"inproc://saline.monitor.{id(self)}"
        bound.monitor(address, MONITORED)
        self._bound = bound
        # made here, not by get_monitor_socket, to size its queue before it connects (an
        # inproc pipe's size is fixed when it is made); only the thread uses it from now on
        self._reader: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.PAIR)
        self._reader.setsockopt(zmq.LINGER, 0)
        self._reader.setsockopt(zmq.RCVHWM, MONITOR_HWM)
        self._reader.connect(address)
        #: fd -> "ip:port" of accepted connections whose address was read for sure
        self._peers: dict[int, str] = {}
        #: events read ahead, and how many disconnects of each fd are among them
        self._events: deque[tuple[int, int]] = deque()
        self._closing: Counter[int] = Counter()
        self._loop = asyncio.get_running_loop()
        self._failures: asyncio.Queue[str] = asyncio.Queue()
        self._untold = 0  # failures beyond MAX_QUEUED_FAILURES, told as one
        self._thread = threading.Thread(target=self._run, name="saline-zmq-monitor", daemon=True)
        self._thread.start()

    async def failure(self) -> str:
        """The next failed handshake, described."""
        text = await self._failures.get()
        if self._untold:
            text, self._untold = f"{text} (and {self._untold} more, not detailed)", 0
        return text

    def close(self) -> None:
        """Stop the monitor; its thread ends on the stop event and closes its socket."""
        with contextlib.suppress(zmq.ZMQError):
            self._bound.disable_monitor()
        self._thread.join(timeout=5)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                event, value = self._next()
                if event == zmq.EVENT_MONITOR_STOPPED:
                    return
                if event == zmq.EVENT_ACCEPTED:
                    self._accepted(value)
                elif event == zmq.EVENT_DISCONNECTED:
                    self._peers.pop(value, None)
                else:
                    self._tell(self._failed(event, value))
        except zmq.ZMQError:  # the context is ending
            return
        finally:
            self._reader.close()

    def _accepted(self, fd: int) -> None:
        self._read_ahead()
        peer = None if self._closing[fd] else _peer_of(fd, self._port)
        self._read_ahead()  # every event queued before the read is in view now
        if peer is None or self._closing[fd]:
            self._peers.pop(fd, None)
            return
        self._peers[fd] = peer
        log.debug("connection from %s", peer)

    def _failed(self, event: int, value: int) -> str:
        what = _failure(event, value)
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return f"{what} (the ZAP refusal names the peer)"
        peer = None
        if self._events or self._reader.poll(_DISCONNECT_WAIT_MS):
            after = self._next()
            if after[0] == zmq.EVENT_DISCONNECTED and self._pairable:
                peer = self._peers.pop(after[1], None)
            else:
                self._events.appendleft(after)
                if after[0] == zmq.EVENT_DISCONNECTED:
                    self._closing[after[1]] += 1
        if peer is None:
            return f"{what} from an unknown peer (gone before its address was read)"
        return f"{what} from {peer}"

    def _tell(self, text: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the master is gone
            self._loop.call_soon_threadsafe(self._put, text)

    def _put(self, text: str) -> None:  # on the loop's thread
        if self._failures.qsize() < MAX_QUEUED_FAILURES:
            self._failures.put_nowait(text)
        else:
            self._untold += 1

    def _next(self) -> tuple[int, int]:
        if not self._events:
            self._queue(self._reader.recv_multipart())
        event = self._events.popleft()
        if event[0] == zmq.EVENT_DISCONNECTED:
            self._closing[event[1]] -= 1
        return event

    def _read_ahead(self) -> None:
        """Queue every event the monitor holds now, without waiting."""
        while True:
            try:
                frames = self._reader.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._queue(frames)

    def _queue(self, frames: list[bytes]) -> None:
        # v1 monitor frames: 16-bit event, 32-bit value (an fd, an errno, a status), endpoint
        event = int.from_bytes(frames[0][:2], "little")
        value = int.from_bytes(frames[0][2:6], "little")
        self._events.append((event, value))
        if event == zmq.EVENT_DISCONNECTED:
            self._closing[value] += 1


def _failure(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        why = _PROTOCOL_ERRORS.get(value, "protocol error")
        return f"handshake failed ({why}, zmq {value:#x})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"handshake refused (ZAP status {value})"
    return f"handshake failed ({os.strerror(value) if value else 'no detail'})"


def _peer_of(fd: int, port: int) -> str | None:
    """``ip:port`` of the TCP peer on ``fd``, if ``fd`` is still a connection accepted on
    ``port``; None otherwise (closed, or reused for something else)."""
    try:
        dup = os.dup(fd)  # ours to close; libzmq's fd stays as it is
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=dup)  # family and type read from the socket itself
    except OSError:
        os.close(dup)
        return None
    with sock:
        try:
            local, peer = sock.getsockname(), sock.getpeername()
        except OSError:
            return None
        family = sock.family
    if family not in (socket.AF_INET, socket.AF_INET6) or local[1] != port:
        return None
    return f"[{peer[0]}]:{peer[1]}" if family == socket.AF_INET6 else f"{peer[0]}:{peer[1]}"
