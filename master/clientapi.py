"""The local client API: a Unix socket for the CLI, root-only unless ``client_acl`` opens it.

Who is asking comes from the kernel (SO_PEERCRED), never from the request. The master's
own user and root may do everything; a user listed in ``client_acl`` may read jobs and
events and run the functions its globs allow; anyone else is refused at the door. With no
``client_acl`` the socket is 0600 in a 0700 directory, so nobody else can even connect.

What may be asked is the table of ``master/operations.py``; this is one door to it.
"""

import asyncio
import contextlib
import os
import pwd
import socket
import struct
from pathlib import Path

from pydantic import ValidationError

from master.client_models import Error, Reply
from master.operations import Caller, Operation, Role, Write
from master.stats import Refusals
from saline.api import HEADER_SIZE, frame, frame_length, parse
from saline.errors import ProtocolError, SalineError


class ClientApi:
    def __init__(
        self,
        sock_dir: Path,
        path: Path,
        acl: dict[str, list[str]],
        operations: dict[str, Operation],
        refusals: Refusals,
    ) -> None:
        self.sock_dir = sock_dir
        self.path = path
        self.acl = acl
        self.operations = operations
        self.refusals = refusals
        self.server: asyncio.AbstractServer | None = None

    # -- socket ------------------------------------------------------------------------

    async def start(self) -> None:
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        # the directory first: the socket is never reachable with the mode umask gave it
        os.chmod(self.sock_dir, self._modes()[0])
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=1 << 20
        )
        self._set_modes()

    def _modes(self) -> tuple[int, int]:
        """(directory, socket) modes: open to local users only when client_acl names some."""
        return (0o755, 0o666) if self.acl else (0o700, 0o600)

    def _set_modes(self) -> None:
        directory, socket_mode = self._modes()
        os.chmod(self.sock_dir, directory)
        os.chmod(self.path, socket_mode)

    def set_acl(self, acl: dict[str, list[str]]) -> str:
        """A reloaded ``client_acl``: new connections are judged by it (open ones keep the
        caller they were identified as)."""
        self.acl = acl
        self._set_modes()
        return f"client_acl: {len(acl)} users"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def identify(self, sock: socket.socket) -> Caller | None:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        if uid in (0, os.getuid()):
            return Caller(user, Role.ADMIN)
        globs = self.acl.get(user)
        if globs is None:
            return None
        return Caller(user, Role.ACL, tuple(globs))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def write(message: Reply) -> None:
            writer.write(frame(message.wire()))
            await writer.drain()

        try:
            caller = self.identify(writer.get_extra_info("socket"))
            if caller is None:
                self.refusals.count("client_denied", "local user not in client_acl")
                await write(Error(message="permission denied: not in client_acl"))
                return
            while True:
                try:
                    header = await reader.readexactly(HEADER_SIZE)
                except asyncio.IncompleteReadError:
                    return
                body = await reader.readexactly(frame_length(header))
                await self._dispatch(caller, parse(body), write)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except ProtocolError as e:
            self.refusals.count("client_" + e.reason, str(e))
            with contextlib.suppress(ConnectionError):
                await write(Error(message=str(e)))
        finally:
            writer.close()

    async def _dispatch(self, caller: Caller, raw: dict[str, object], write: Write) -> None:
        operation = self.operations.get(str(raw.get("op")))
        if operation is None:
            self.refusals.count("client_unknown_op", str(raw.get("op"))[:64])
            await write(Error(message=f"unknown operation {raw.get('op')!r}"))
            return
        if operation.role is Role.ADMIN and caller.role is not Role.ADMIN:
            await write(Error(message="permission denied"))
            return
        try:
            request = operation.request.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            await write(Error(message=f"bad request: {field}: {err['msg']}"))
            return
        try:
            await operation.handler(caller, request, write)
        except SalineError as e:
            await write(Error(message=str(e)))
