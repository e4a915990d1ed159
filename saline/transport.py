"""pyzmq sockets with CurveZMQ, and nothing else: no message semantics live here.

Errors from zmq are translated into ``TransportError`` at this edge.
"""

from typing import Any

import zmq
import zmq.asyncio

from saline.errors import TransportError
from saline.keys import KeyPair

#: ZAP domain the master's socket authenticates in
ZAP_DOMAIN = "saline"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: messages queued per peer and direction before libzmq pushes back
PIPE_HWM = 1000


def _tune(sock: zmq.Socket[Any], max_frame: int) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    # libzmq drops a peer sending more than this (a hard stop against memory exhaustion);
    # frames between the cap and this limit reach the codec and are refused and counted.
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame * 2 + 4096)
    # per peer (a ROUTER has one pipe per connection): a minion has a handful of messages
    # in flight, so a peer that floods or stops reading is cut off at this many, not 100k
    sock.setsockopt(zmq.SNDHWM, PIPE_HWM)
    sock.setsockopt(zmq.RCVHWM, PIPE_HWM)


def bind_router(
    ctx: zmq.asyncio.Context, keys: KeyPair, address: str, max_frame: int
) -> zmq.asyncio.Socket:
    """The master's minion socket: a CURVE server ROUTER bound to ``address``.

    A ZAP handler must already be bound at ``ZAP_ENDPOINT`` (libzmq accepts every client
    key when none is).
    """
    sock = ctx.socket(zmq.ROUTER)
    _tune(sock, max_frame)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # thousands of minions reconnect at once after a master restart: libzmq's default
    # listen backlog (100) overflows and pushes them into seconds of connect back-off
    sock.setsockopt(zmq.BACKLOG, 4096)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
    try:
        sock.bind(address)
    except zmq.ZMQError as e:
        sock.close()
        raise TransportError(f"cannot bind minion socket {address}: {e}") from e
    return sock


def connect_dealer(
    ctx: zmq.asyncio.Context, keys: KeyPair, server_public: str, address: str, max_frame: int
) -> zmq.asyncio.Socket:
    """A minion's socket: a CURVE client DEALER that reconnects by itself."""
    sock = ctx.socket(zmq.DEALER)
    _tune(sock, max_frame)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    # ZMTP heartbeats notice a dead master (or a dead TCP path) and force a reconnect
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
    try:
        sock.connect(address)
    except zmq.ZMQError as e:
        sock.close()
        raise TransportError(f"cannot connect to master {address}: {e}") from e
    return sock


def tcp_address(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
