"""The minion's links to its masters: one CurveZMQ DEALER per master, each with its session.

Several masters share one store and one keypair, so the minion trusts them all alike: a
job from any of them runs (once, whichever sent it), and a return or event may go to any
of them. Which one is decided here, by pure functions of the links' states (:func:`choose`);
the sockets and the session walk live in :class:`MasterLink` and ``minion.daemon``.
"""

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from enum import StrEnum

import zmq
import zmq.asyncio
from pydantic import BaseModel

from minion.config import master_label
from saline.codec import encode
from saline.keys import KeyPair
from saline.transport import connect_dealer, tcp_address

log = logging.getLogger(__name__)

#: jids remembered so that a job sent twice (by two masters, or twice by one) runs once
SEEN_JOBS = 10_000


class LinkState(StrEnum):
    #: no session: connecting, or the handshake done and hello said, no answer yet
    CONNECTING = "connecting"
    #: the master holds our key in pending; hello again every ``acceptance_wait``
    PENDING = "pending"
    #: the master refused our key (rejected, or the id is not the key's)
    REFUSED = "refused"
    #: welcomed: jobs, returns, events and heartbeats flow
    READY = "ready"


def choose(states: Sequence[LinkState], origin: int | None = None) -> int | None:
    """The index of the link a message goes to, or None when no link is ready.

    A job's return goes back to the link the job came from (``origin``) when that one is
    ready, else to the first ready link in config order; an event (no origin) goes to the
    first ready link, the preferred master. Every master stores what it is sent (they
    share the store), so any ready link will do: the order only keeps traffic on one.
    """
    if origin is not None and 0 <= origin < len(states) and states[origin] is LinkState.READY:
        return origin
    return next((i for i, state in enumerate(states) if state is LinkState.READY), None)


class SeenJobs:
    """The last ``limit`` jids seen, oldest forgotten first."""

    def __init__(self, limit: int = SEEN_JOBS) -> None:
        self.limit = limit
        self._jids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, jid: str) -> bool:
        """Remember ``jid``; True when it was not among the last ``limit`` seen."""
        if jid in self._jids:
            return False
        self._jids[jid] = None
        while len(self._jids) > self.limit:
            self._jids.popitem(last=False)
        return True

    def __contains__(self, jid: object) -> bool:
        return jid in self._jids

    def __len__(self) -> int:
        return len(self._jids)


class MasterLink:
    """One master: its address, its DEALER and monitor socket, and the session's state.

    Built closed; :meth:`open` connects (libzmq then reconnects by itself, and ZMTP
    heartbeats turn a dead or stopped master into a disconnect the monitor reports).
    """

    def __init__(self, index: int, host: str, port: int) -> None:
        #: position in the config's ``master`` list (0: the preferred master)
        self.index = index
        self.host = host
        self.port = port
        #: ``host:port`` as log lines name the master
        self.address = master_label(host, port)
        self.url = tcp_address(host, port)
        self.state = LinkState.CONNECTING
        #: monotonic times of the last hello and heartbeat said on this link
        self.last_hello = 0.0
        self.last_beat = 0.0
        self.sock: zmq.asyncio.Socket | None = None
        self.monitor: zmq.asyncio.Socket | None = None

    @property
    def ready(self) -> bool:
        return self.state is LinkState.READY

    def open(
        self, ctx: zmq.asyncio.Context, keypair: KeyPair, master_pub: str, max_frame: int
    ) -> None:
        """Connect the DEALER and its monitor (handshakes and disconnects).

        :raises TransportError: for an address libzmq refuses.
        """
        self.sock = connect_dealer(ctx, keypair, master_pub, self.url, max_frame)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )

    def send(self, message: BaseModel) -> bool:
        """Queue ``message`` without waiting; False when it was not (closed, or queue full:
        what matters is spooled and sent again)."""
        if self.sock is None:
            return False
        try:
            self.sock.send(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug(
                "master %s: send queue full; %s will be retried",
                self.address,
                message.__class__.__name__,
            )
            return False
        return True

    def close(self, linger_ms: int = 0) -> None:
        """Close the monitor and the socket, giving queued frames ``linger_ms`` to leave."""
        if self.sock is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        if self.monitor is not None:
            self.monitor.close()
        self.sock.close(linger=linger_ms)
        self.sock = self.monitor = None
