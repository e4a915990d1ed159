"""A small TCP proxy with an on/off switch: how the lab cuts one master off from etcd.

Each route listens on a loopback port and forwards every connection to one upstream
(an etcd member's client port). **Cut**: the listeners close (new connections are
refused) and every open connection is aborted (the peer sees a reset); **heal**: the
listeners bind their same ports again. As a lab process::

    python -m saline.lab.tcp_proxy --state-file PATH --route 127.0.0.1:P=127.0.0.1:Q [...]

``SIGUSR1`` cuts, ``SIGUSR2`` heals, ``SIGTERM`` stops. After starting and after each
switch the proxy rewrites ``PATH`` (JSON: pid, cut, routes), so a caller waits on that
file instead of guessing; the path on the command line also marks the process as the
lab's own.
"""

import argparse
import asyncio
import functools
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: bytes read from one side before they are written to the other
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Route:
    """Connections to ``listen`` are forwarded to ``upstream``; port 0 picks a free port
    the first time, which later heals bind again."""

    listen: Address
    upstream: Address
    server: asyncio.AbstractServer | None = None


@dataclass
class Proxy:
    routes: list[Route]
    #: the writers of every open connection, both sides, to abort on cut
    _open: set[asyncio.StreamWriter] = field(default_factory=set)
    #: True while cut (listeners closed)
    cut: bool = False

    async def open(self) -> None:
        """Bind every route's listener (again); the proxy is on. Idempotent."""
        for route in self.routes:
            if route.server is not None:
                continue
            server = await asyncio.start_server(
                functools.partial(self._serve, route),
                route.listen.host,
                route.listen.port,
                reuse_address=True,
            )
            route.server = server
            route.listen = Address(route.listen.host, server.sockets[0].getsockname()[1])
        self.cut = False

    async def close(self) -> None:
        """Close every listener and abort every open connection; the proxy is off."""
        self.cut = True
        servers = [r.server for r in self.routes if r.server is not None]
        for route in self.routes:
            route.server = None
        for server in servers:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        for server in servers:
            await server.wait_closed()

    async def _serve(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                route.upstream.host, route.upstream.port
            )
        except OSError:
            writer.transport.abort()  # the upstream is down: so is this connection
            return
        if self.cut:  # cut while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        pipes = {
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        }
        try:
            while pipes:
                done, pipes = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                if not all(task.result() for task in done):
                    break  # one side failed: so does the whole connection
        finally:
            for task in pipes:
                task.cancel()
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()

    def describe(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "cut": self.cut,
            "routes": [{"listen": str(r.listen), "upstream": str(r.upstream)} for r in self.routes],
        }


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF, then half-close the other side; False when either side failed."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        return False
    return True


def _write_state(path: Path, proxy: Proxy) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(proxy.describe()))
    tmp.replace(path)


async def serve(routes: list[Route], state_file: Path) -> None:
    """Run the proxy until SIGTERM/SIGINT; switch on SIGUSR1 (cut) and SIGUSR2 (heal)."""
    proxy = Proxy(routes)
    await proxy.open()
    _write_state(state_file, proxy)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    switches: asyncio.Queue[bool] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGUSR1, switches.put_nowait, True)
    loop.add_signal_handler(signal.SIGUSR2, switches.put_nowait, False)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)

    async def switcher() -> None:
        while True:
            cut = await switches.get()
            if cut:
                await proxy.close()
            else:
                await proxy.open()
            _write_state(state_file, proxy)

    task = asyncio.create_task(switcher())
    await stopping.wait()
    task.cancel()
    await proxy.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="saline.lab.tcp_proxy", description=__doc__)
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument(
        "--route", action="append", required=True, help="LISTEN_HOST:PORT=UPSTREAM_HOST:PORT"
    )
    args = parser.parse_args(argv)
    try:
        routes = []
        for text in args.route:
            listen, sep, upstream = text.partition("=")
            if not sep:
                raise ValueError(f"route {text!r}: expected LISTEN=UPSTREAM")
            routes.append(Route(Address.parse(listen), Address.parse(upstream)))
    except ValueError as e:
        parser.error(str(e))
    asyncio.run(serve(routes, args.state_file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
