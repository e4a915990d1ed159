"""A stand-in SNTP server for the lab and the tests: the host clock plus an injectable skew.

Each reply carries the host clock plus the skew (float seconds) read from the skew file at
that request, so another process (``saline lab fault``) can make one node's time server run
ahead or behind by writing the file. A missing or unreadable file means no skew.

Run for the lab: ``python -m saline.lab.ntp_standin --host H --port P --skew-file F``
(port 0 picks a free port; the first line on stdout names the bound address).
In tests: ``NtpStandin(skew_file).start()`` serves from a thread until ``stop()``.
"""

import argparse
import logging
import socketserver
import struct
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: the 48-byte SNTP header (RFC 4330 section 4), as the time_drift beacon's client reads it
_PACKET = struct.Struct("!BBbbII4sQQQQ")
_NTP_UNIX_DELTA = 2_208_988_800
_MODE_CLIENT, _MODE_SERVER = 3, 4


def _ntp(unix: float) -> int:
    return int((unix + _NTP_UNIX_DELTA) * 2**32) & 0xFFFF_FFFF_FFFF_FFFF


class NtpStandin:
    """An SNTP server on a background thread; the skew file is read on every request."""

    def __init__(self, skew_file: Path | None = None) -> None:
        self.skew_file = skew_file
        self._server: socketserver.UDPServer | None = None

    def skew(self) -> float:
        """Seconds to add to the host clock: the skew file's number, else 0."""
        if self.skew_file is None:
            return 0.0
        try:
            return float(self.skew_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0.0
        except (OSError, ValueError) as exc:
            # a half-written file must not stop the server: answer unskewed, say why
            log.warning("ignoring skew file %s: %s", self.skew_file, exc)
            return 0.0

    def reply(self, request: bytes, received: float) -> bytes | None:
        """The answer to one datagram received at host time ``received``; None to ignore it."""
        if len(request) < _PACKET.size:
            return None
        first, _, poll, *_, client_transmit = _PACKET.unpack_from(request)
        if first & 0x07 != _MODE_CLIENT:
            return None
        skew = self.skew()
        return _PACKET.pack(
            (first & 0x38) | _MODE_SERVER,  # the client's version; leap indicator 0: in sync
            1,  # stratum 1: a primary reference (our own clock)
            poll,
            -20,  # precision: about a microsecond
            0,  # root delay
            0,  # root dispersion
            b"LOCL",
            _ntp(received + skew),  # reference timestamp: last "set" now
            client_transmit,  # originate: the client's transmit, echoed
            _ntp(received + skew),
            _ntp(time.time() + skew),
        )

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve in a background thread; :returns: the bound (host, port)."""
        standin = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                received = time.time()
                data, sock = self.request
                answer = standin.reply(data, received)
                if answer is not None:
                    sock.sendto(answer, self.client_address)

        self._server = socketserver.UDPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        bound_host, bound_port = self._server.server_address[:2]
        return str(bound_host), int(bound_port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def main(argv: list[str] | None = None) -> None:
    """``python -m saline.lab.ntp_standin``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="stand-in SNTP server for the saline lab")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=123)
    parser.add_argument("--skew-file", type=Path, help="seconds of skew, reread per request")
    args = parser.parse_args(argv)
    standin = NtpStandin(args.skew_file)
    host, port = standin.start(args.host, args.port)
    print(f"ntp-standin listening on udp://{host}:{port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
