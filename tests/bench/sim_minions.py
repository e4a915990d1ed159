"""Simulated minions for the fan-out benchmark: many CURVE DEALER sockets in one process.

Each simulated minion speaks the real protocol through the real codec and transport: it
says hello on connect (and again on ``rehello`` or when no welcome came), sends heartbeats,
answers every job at once with a successful return (no fork), and reads acks. Used as a
``multiprocessing`` target by ``fanout.py``.
"""

from __future__ import annotations

import resource
import select
import time
from collections.abc import Callable
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any, cast

import zmq

from saline.codec import decode_from_master, encode
from saline.keys import KeyPair
from saline.protocol import Heartbeat, Hello, Job, Rehello, Return, Welcome
from saline.transport import connect_dealer

Ident = tuple[str, str, str]  # (minion id, public, secret)
BEAT_EVERY = 5  # seconds between heartbeats of one simulated minion
HELLO_RETRY_S = 3.0
PING_OK: dict[str, Any] = {"success": True, "retcode": 0, "ret": True}
#: the transport's own DEALER set-up, on a plain (not asyncio) context
dealer = cast(Callable[..., "zmq.Socket[Any]"], connect_dealer)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker(
    idents: list[Ident], master_pub: str, address: str, stop_ev: MpEvent, out: MpQueue[Any]
) -> None:
    """Simulate ``idents`` minions until ``stop_ev`` is set; put (counters, timeline) on out."""
    raise_nofile()
    ctx = zmq.Context(io_threads=1)
    ctx.set(zmq.MAX_SOCKETS, len(idents) + 64)  # default 1023
    # epoll over the sockets' zmq FDs, not zmq.Poller: zmq_poll is O(sockets) per call and
    # made the simulator, not the master, the bottleneck. A zmq FD only signals that the
    # socket's state must be re-read, so every socket touched is re-checked (``dirty``).
    ep = select.epoll()
    hellos = {
        i: encode(Hello(id=i, grains={"role": "bench"}, version="bench")) for i, _, _ in idents
    }
    socks: dict[zmq.Socket[Any], str] = {}
    hello_at: dict[str, float] = {}  # minions not welcomed yet -> last hello
    stats = {"jobs": 0, "bad": 0}
    timeline: dict[str, list[float]] = {}  # jid -> [first recv, last recv, last sent]
    for minion_id, public, secret in idents:
        sock = dealer(ctx, KeyPair(public, secret), master_pub, address, 1 << 24)
        sock.send(hellos[minion_id])
        hello_at[minion_id] = time.monotonic()
        socks[sock] = minion_id
    by_fd = {s.get(zmq.FD): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    by_id = {m: s for s, m in socks.items()}
    dirty = set(socks)
    tick, next_tick = 0, time.monotonic() + 1.0
    try:
        while not stop_ev.is_set():
            dirty.update(by_fd[fd] for fd, _ in ep.poll(0 if dirty else 0.2))
            while dirty:
                sock = dirty.pop()
                minion_id = socks[sock]
                while sock.get(zmq.EVENTS) & zmq.POLLIN:
                    try:
                        msg = decode_from_master(sock.recv(), 1 << 24)
                    except Exception:
                        stats["bad"] += 1
                        continue
                    if isinstance(msg, Job):
                        now = time.monotonic()
                        stamps = timeline.setdefault(msg.jid, [now, now, now])
                        stamps[1] = now
                        ret = Return(jid=msg.jid, id=minion_id, fun=msg.fun, **PING_OK)
                        sock.send(encode(ret), zmq.NOBLOCK)
                        stamps[2] = time.monotonic()
                        stats["jobs"] += 1
                        continue
                    if isinstance(msg, Welcome):
                        hello_at.pop(minion_id, None)
                    elif isinstance(msg, Rehello):
                        sock.send(hellos[minion_id], zmq.NOBLOCK)
                    stats[msg.kind] = stats.get(msg.kind, 0) + 1  # ack, pending, refused...
            now = time.monotonic()
            if now >= next_tick:  # once a second: hello retries, heartbeats for 1/BEAT_EVERY
                next_tick, tick = now + 1.0, tick + 1
                dirty.update(socks)
                for minion_id, at in list(hello_at.items()):
                    if now - at >= HELLO_RETRY_S:
                        by_id[minion_id].send(hellos[minion_id], zmq.NOBLOCK)
                        hello_at[minion_id] = now
                for n, (sock, minion_id) in enumerate(socks.items()):
                    if n % BEAT_EVERY == tick % BEAT_EVERY and minion_id not in hello_at:
                        sock.send(encode(Heartbeat(id=minion_id)), zmq.NOBLOCK)
    finally:
        ep.close()
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
        out.put((stats, timeline))
