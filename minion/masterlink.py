"""A node's own line to the master for ``saline call`` (without ``--local``).

The function runs here, as a job would, and asks the master for this node's files and
pillar with the node's own key, exactly as the minion daemon relays a job's requests:
``FileRequest`` and ``PillarRequest`` frames, nothing else. No ``hello`` and no
heartbeat, so the master's view of the minion (its presence, session and grains) is left
as the running minion daemon made it; the master answers these two kinds from any
connection of an accepted key whose id matches (``master.handlers``, policy ``minion``),
and compiles the pillar for that id only.

The link is opened on the first request: a function that needs neither files nor pillar
never talks to the master. With several masters (``master`` a list) it talks to the first;
a master that does not answer in time is left for the next in the list, and a request
fails only when none answered, naming every address tried.
"""

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import zmq
import zmq.asyncio

from minion.channel import ChannelError
from minion.config import MinionConfig, master_label
from minion.masterkey import master_public_key
from saline.codec import decode_from_master, encode
from saline.errors import ProtocolError
from saline.keys import read_keypair
from saline.protocol import FileReply, FileRequest, PillarReply, PillarRequest, Refused
from saline.transport import connect_dealer, tcp_address

log = logging.getLogger(__name__)

#: seconds to wait for the master's answer to one request
REQUEST_TIMEOUT = 10.0


class MasterRelay:
    """A :data:`minion.channel.Relay` to the master over a DEALER with the minion's key.

    Call :meth:`close` when done.
    """

    def __init__(
        self, config: MinionConfig, minion_id: str, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self.config = config
        self.minion_id = minion_id
        self.timeout = timeout
        #: every master, in config order: ``host:port`` as errors name them, and its URL
        self.masters = [(master_label(h, p), tcp_address(h, p)) for h, p in config.masters]
        #: the master asked now (the next one after a timeout)
        self._current = 0
        self.master_pub = master_public_key(config)
        # the key must exist: a new one would only land in pending on the master
        self.keypair = read_keypair(config.pki_dir, "minion")
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[FileReply | PillarReply]] = {}
        self._ids = itertools.count()

    @property
    def address(self) -> str:
        """``host:port`` of the master asked now."""
        return self.masters[self._current][0]

    def _connect(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            if self._ctx is None:
                self._ctx = zmq.asyncio.Context()
            url = self.masters[self._current][1]
            self._sock = connect_dealer(
                self._ctx, self.keypair, self.master_pub, url, self.config.max_frame_bytes
            )
            self._receiver = asyncio.create_task(self._receive(self._sock))
        return self._sock

    async def _disconnect(self) -> None:
        """Drop the socket to the master asked now (open requests on it are abandoned)."""
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
            self._receiver = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            data = await sock.recv()
            try:
                msg = decode_from_master(data, self.config.max_frame_bytes)
            except ProtocolError as e:
                log.warning("ignored a frame from the master: %s", e)
                continue
            if isinstance(msg, FileReply | PillarReply):
                future = self._waiting.get(msg.req)
                if future is not None and not future.done():
                    future.set_result(msg)
            elif isinstance(msg, Refused):  # says no request id: every open request fails
                for future in self._waiting.values():
                    if not future.done():
                        future.set_exception(_refused(msg.reason, self.minion_id))

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        req = next(self._ids)
        message: FileRequest | PillarRequest
        if request.get("op") == "file":
            have = request.get("have")
            message = FileRequest(
                id=self.minion_id, req=req, path=str(request.get("path")), have=have and str(have)
            )
        elif request.get("op") == "pillar":
            message = PillarRequest(id=self.minion_id, req=req)
        else:
            raise ChannelError(f"unknown request {str(request.get('op'))[:32]!r}")
        tried: list[str] = []
        for _ in self.masters:  # each master once, from the one that answered last
            try:
                reply = await self._ask(message)
            except TimeoutError:
                tried.append(self.address)
                await self._disconnect()
                self._current = (self._current + 1) % len(self.masters)
                continue
            return reply.model_dump(exclude={"v", "kind", "req"})
        where = "the master at " if len(tried) == 1 else "any master at "
        raise ChannelError(
            f"no answer from {where}{', '.join(tried)} within {self.timeout:g}s"
            " (is it running? `saline call --local` needs none)"
        )

    async def _ask(self, message: FileRequest | PillarRequest) -> FileReply | PillarReply:
        """One request to the master asked now.

        :raises TimeoutError: no answer within ``timeout``.
        """
        sock = self._connect()
        future: asyncio.Future[FileReply | PillarReply] = asyncio.get_running_loop().create_future()
        self._waiting[message.req] = future
        try:
            await sock.send(encode(message))
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._waiting.pop(message.req, None)

    async def close(self) -> None:
        await self._disconnect()
        if self._ctx is not None:
            self._ctx.term()


def _refused(reason: str, minion_id: str) -> ChannelError:
    if reason == "not_accepted":
        return ChannelError(
            f"the master refused this node's key: it is not accepted"
            f" (`saline key list`, `saline key accept {minion_id}` on the master)"
        )
    if reason == "id_mismatch":
        return ChannelError(f"the master refused: this node's key is not the key of {minion_id!r}")
    return ChannelError(f"the master refused: {reason}")
