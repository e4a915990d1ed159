"""The CLI's side of the local client API: a blocking Unix-socket connection to the master."""

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saline.api import API_VERSION, HEADER_SIZE, frame, frame_length, parse
from saline.errors import ClientError


class MasterClient:
    """One connection to the master's client socket; use as a context manager."""

    def __init__(self, path: Path, timeout: float | None = 10.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except FileNotFoundError as e:
            self._sock.close()
            raise ClientError(f"no master listening at {path} (is `saline master` running?)") from e
        except PermissionError as e:
            self._sock.close()
            raise ClientError(f"permission denied on {path}: the client API is root-only") from e
        except OSError as e:
            self._sock.close()
            raise ClientError(f"cannot reach the master at {path}: {e.strerror or e}") from e

    def __enter__(self) -> "MasterClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send(self, op: str, **fields: Any) -> None:
        try:
            self._sock.sendall(frame({"v": API_VERSION, "op": op, **fields}))
        except OSError as e:
            # the master may have refused us and closed: its reason is waiting to be read
            try:
                self.receive()
            except ClientError as refused:
                if "connection to the master lost" not in str(refused):
                    raise refused from e
            raise ClientError(f"connection to the master lost: {e.strerror or e}") from e

    def _read_exact(self, n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            try:
                chunk = self._sock.recv(min(n - len(chunks), 1 << 20))
            except TimeoutError as e:
                raise ClientError("the master did not answer in time") from e
            except OSError as e:
                raise ClientError(f"connection to the master lost: {e.strerror or e}") from e
            if not chunk:
                raise ClientError("the master closed the connection")
            chunks += chunk
        return bytes(chunks)

    def receive(self) -> dict[str, Any]:
        message = parse(self._read_exact(frame_length(self._read_exact(HEADER_SIZE))))
        if message.get("type") == "error":
            raise ClientError(str(message.get("message", "unknown error")))
        return message

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its single ``result`` reply."""
        self.send(op, **fields)
        return self.receive()

    def stream(self, op: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Send one request and yield replies until (and including) ``done``."""
        self.send(op, **fields)
        while True:
            message = self.receive()
            yield message
            if message.get("type") == "done":
                return
