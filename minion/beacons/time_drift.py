"""The ``time_drift`` beacon: this node's clock offset against an SNTP server.

Chef Backend requires the clocks of its nodes to agree within 1.5 s; the master compares
the offsets the backends publish (``view.values('G@role:backend', 'time_drift', 'offset')``)
and this beacon also flags a node whose own offset is too large.

The client is a plain RFC 4330 SNTP client (one UDP request, one reply): the minion needs
no ntpd tooling, and a stand-in server (``saline.lab.ntp_standin``) can inject drift.

Params:
  ``server``: SNTP server host (default ``127.0.0.1``); ``port`` (default 123);
  ``max_offset``: largest acceptable offset, in seconds (default 1.5); ``timeout``: seconds
  to wait for the reply (default 2).

States (one observation keyed ``server:port``):
  ``ok`` (|offset| <= max_offset), ``drift`` (bad: a larger offset), ``unreachable`` (bad:
  no reply, an error, or a reply unfit to set a clock by: kiss-of-death, unsynchronised
  server, mismatched originate timestamp...; ``error`` says which).

Data: ``server``, ``port``, ``max_offset``; when measured, ``offset`` (seconds the server's
clock is ahead of this node's, rounded to the millisecond; negative when this node is ahead)
and ``delay`` (round trip, seconds); for ``unreachable``, ``error`` and no ``offset``.

Only state changes are emitted, so set ``announce: true`` for the master to know every
offset from the start. Example::

    beacons:
      time_drift: {server: ntp.example.com, interval: 60, announce: true}
"""

import socket
import struct
import time
from dataclasses import dataclass

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation

#: seconds from the NTP era 0 epoch (1900-01-01) to the Unix epoch
NTP_UNIX_DELTA = 2_208_988_800
#: the 48-byte SNTP header: LI/VN/mode, stratum, poll, precision, root delay, root
#: dispersion, reference id, then the reference, originate, receive and transmit timestamps
_PACKET = struct.Struct("!BBbbII4sQQQQ")
_VERSION = 4
_MODE_CLIENT = 3
_MODE_SERVER = 4
#: leap indicator 3: the server's clock is not synchronised
_LI_ALARM = 3


class SntpError(Exception):
    """The server's reply cannot be used to measure the offset."""


@dataclass(frozen=True)
class SntpSample:
    """One measurement (RFC 4330 section 5)."""

    #: seconds the server's clock is ahead of ours
    offset: float
    #: round-trip delay, seconds
    delay: float


def to_ntp(unix: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (32.32 fixed point seconds since 1900)."""
    return int((unix + NTP_UNIX_DELTA) * 2**32) & 0xFFFF_FFFF_FFFF_FFFF


def from_ntp(stamp: int) -> float:
    """A 64-bit NTP timestamp as a Unix time (era 0: valid until 2036)."""
    return stamp / 2**32 - NTP_UNIX_DELTA


def sntp_query(host: str, port: int, timeout: float) -> SntpSample:
    """Ask ``host:port`` for the time once and compute the clock offset.

    :raises OSError: the server cannot be resolved or reached, or did not reply in time.
    :raises SntpError: the reply is malformed or unfit to set a clock by.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        # connected: replies from other peers are dropped, and an ICMP "port unreachable"
        # fails recv at once instead of waiting for the timeout
        sock.connect(address)
        # the server copies our transmit timestamp into its reply's originate timestamp
        # (RFC 4330 section 5): matching it tells a reply to this request from a stray one
        t1 = time.time()
        sent = to_ntp(t1)
        request = _PACKET.pack(
            (_VERSION << 3) | _MODE_CLIENT, 0, 0, 0, 0, 0, b"\0" * 4, 0, 0, 0, sent
        )
        sock.send(request)
        reply = sock.recv(1024)
        t4 = time.time()
    return _sample(reply, sent, t1, t4)


def _sample(reply: bytes, sent: int, t1: float, t4: float) -> SntpSample:
    if len(reply) < _PACKET.size:
        raise SntpError(f"short reply ({len(reply)} bytes)")
    first, stratum, _, _, _, _, refid, _, originate, receive, transmit = _PACKET.unpack_from(reply)
    if first & 0x07 != _MODE_SERVER:
        raise SntpError(f"reply mode is {first & 0x07}, not {_MODE_SERVER} (server)")
    if originate != sent:
        raise SntpError("reply does not answer our request (originate timestamp mismatch)")
    if stratum == 0:
        code = refid.decode("ascii", "replace").strip("\0")
        raise SntpError(f"kiss-of-death from the server ({code or 'no code'})")
    if first >> 6 == _LI_ALARM:
        raise SntpError("the server's clock is not synchronised (leap indicator 3)")
    if transmit == 0:
        raise SntpError("reply has no transmit timestamp")
    t2, t3 = from_ntp(receive), from_ntp(transmit)
    return SntpSample(offset=((t2 - t1) + (t3 - t4)) / 2, delay=(t4 - t1) - (t3 - t2))


class TimeDriftBeaconConfig(BeaconConfig):
    #: SNTP server host
    server: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=123, ge=1, le=65535)
    #: largest acceptable |offset|, seconds (Chef Backend wants under 1.5 s between nodes)
    max_offset: float = Field(default=1.5, gt=0)
    #: seconds to wait for the reply
    timeout: float = Field(default=2.0, gt=0)


class TimeDriftBeacon(Beacon):
    """Measure the clock offset against an SNTP server: ok, drift, or unreachable."""

    name = "time_drift"
    bad_states = ("drift", "unreachable")
    Config = TimeDriftBeaconConfig
    config: TimeDriftBeaconConfig

    def check(self) -> list[Observation]:
        cfg = self.config
        key = f"{cfg.server}:{cfg.port}"
        data: dict[str, object] = {
            "server": cfg.server,
            "port": cfg.port,
            "max_offset": cfg.max_offset,
        }
        try:
            sample = sntp_query(cfg.server, cfg.port, cfg.timeout)
        except (OSError, SntpError) as exc:
            error = str(exc) or type(exc).__name__
            return [Observation(key, "unreachable", bad=True, data={**data, "error": error})]
        offset = round(sample.offset, 3)
        data |= {"offset": offset, "delay": round(sample.delay, 3)}
        if abs(offset) <= cfg.max_offset:
            return [Observation(key, "ok", bad=False, data=data)]
        return [Observation(key, "drift", bad=True, data=data)]
