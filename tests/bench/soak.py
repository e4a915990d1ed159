"""Soak: mixed hostile and normal traffic against a real lab master; its RSS every minute.

    python tests/bench/soak.py [--minutes 15] [--minions 4] --json OUT.json

For the whole run, at once: fuzzed frames from an accepted key and from unknown keys
(``fuzz.py``'s generator), floods of hellos from fresh keys, big frames (just under the
cap from an accepted key, just over a hello's cap from unknown keys), event storms with
large data and distinct keys (the cluster view), minions' reconnects (fresh sockets for
the same key), file requests that are never read, and, as the normal traffic,
``test.ping`` to every lab minion through the client API every second (each must answer).
Printed: the master's RSS after a one-minute warm-up and every minute after, the final
ratio (target: within 1.5x of the warm-up figure), pings answered and failed, frames
sent and refusals by reason.
"""

import argparse
import json
import random
import secrets
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import zmq
from fuzz import dealer, drain, frame

from saline.codec import encode
from saline.keys import KeyRing, KeyState, read_keypair
from saline.lab.lab import Lab
from saline.protocol import Event, FileRequest, Hello
from saline.transport import tcp_address

#: seconds each kind of hostile traffic rests between its rounds
PAUSE = 4.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Hostile(threading.Thread):
    """One kind of hostile traffic, in a loop, until ``stop``."""

    def __init__(self, name: str, lab: Lab, stop: threading.Event, sent: Counter[str]) -> None:
        super().__init__(name=name, daemon=True)
        self.lab, self.stop, self.sent = lab, stop, sent
        pki = lab.directory / "master" / "pki"
        self.master_pub = read_keypair(pki, "master").public
        self.address = tcp_address("127.0.0.1", int(lab.state["port"]))
        self.public, self.secret = zmq.curve_keypair()
        self.own_id = f"soak-{name}-{secrets.token_hex(2)}"
        KeyRing(pki).add(self.own_id, self.public.decode(), KeyState.ACCEPTED)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.rng = random.Random(name)
        self.replies: Counter[str] = Counter()

    def accepted(self) -> Any:
        return dealer(self.ctx, self.master_pub, self.address, self.public, self.secret)

    def run(self) -> None:
        step = getattr(self, f"step_{self.name}")
        while not self.stop.is_set():
            step()
            self.stop.wait(PAUSE)  # hostile, not a CPU saturation test: the figure is memory

    def step_fuzz(self) -> None:
        socks = [
            self.accepted(),
            dealer(self.ctx, self.master_pub, self.address, *zmq.curve_keypair()),
        ]
        for n in range(2000):
            try:  # an unknown key's handshake may be refused (new_key_rate): never block
                socks[n % 2].send(frame(self.rng, self.own_id), flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.sent["fuzz frames not sent (no connection)"] += 1
            if n % 200 == 0:
                for s in socks:
                    drain(s, self.replies)
        self.sent["fuzz"] += 2000
        for s in socks:
            drain(s, self.replies, wait_ms=500)
            s.close(linger=0)

    def step_hellos(self) -> None:
        socks = []
        for _ in range(100):
            s = dealer(self.ctx, self.master_pub, self.address, *zmq.curve_keypair())
            s.send(encode(Hello(id=f"soak-new-{self.rng.randrange(10**9)}")))
            socks.append(s)
        self.sent["hellos"] += 100
        self.stop.wait(1.0)  # let the handshakes happen before the sockets go
        for s in socks:
            s.close(linger=0)

    def step_big(self) -> None:
        mine = self.accepted()
        stranger = dealer(self.ctx, self.master_pub, self.address, *zmq.curve_keypair())
        cap = 16 * 1024 * 1024
        big = msgpack.packb(
            {"v": 1, "kind": "heartbeat", "id": self.own_id, "pad": b"\0" * (cap - 100)}
        )
        for _ in range(2):
            mine.send(big, copy=False)
            stranger.send(b"\xc4" + b"\0" * (300 * 1024), copy=False)
        self.sent["big frames"] += 4
        drain(mine, self.replies, wait_ms=1000)
        drain(stranger, self.replies, wait_ms=100)
        mine.close(linger=0)
        stranger.close(linger=0)

    def step_storm(self) -> None:
        sock = self.accepted()
        sock.send(encode(Hello(id=self.own_id)))
        for n in range(200):
            data = {"key": f"k{self.rng.randrange(10**9)}", "blob": "x" * 60_000}
            tag = f"saline/beacon/{self.own_id}/storm/s{n % 3}"
            eid = f"{time.time_ns()}-{n}"
            sock.send(encode(Event(id=self.own_id, eid=eid, tag=tag, data=data)))
        self.sent["storm events"] += 200
        drain(sock, self.replies, wait_ms=1000)
        sock.close(linger=0)

    def step_reconnects(self) -> None:
        for _ in range(20):
            sock = self.accepted()
            sock.send(encode(Hello(id=self.own_id)))
            drain(sock, self.replies, wait_ms=1000)  # until the welcome
            sock.close(linger=0)
        self.sent["reconnects"] += 20

    def step_unread_files(self) -> None:
        sock = self.accepted()
        sock.send(encode(Hello(id=self.own_id)))
        for req in range(100):
            sock.send(encode(FileRequest(id=self.own_id, req=req, path="big.bin")))
        self.sent["unread file requests"] += 100
        self.stop.wait(2.0)  # the replies arrive and are never read
        sock.close(linger=0)  # never read: the replies pile up in the master, or do not


def pinger(lab: Lab, stop: threading.Event, result: Counter[str], latencies: list[float]) -> None:
    expected = sorted(lab.state["minions"])
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with lab.client(timeout=30) as master:
                # the lab's minions only: the soak's own accepted keys never answer
                target = ",".join(expected)
                stream = master.stream(
                    "run", target=target, tgt_type="list", fun="test.ping", timeout=20
                )
                done = list(stream)[-1]
            ok = done["succeeded"] == expected
        except Exception:
            ok = False
        result["answered" if ok else "failed"] += 1
        latencies.append(time.perf_counter() - started)
        stop.wait(1.0)


def soak(minutes: float, minions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="saline-soak-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        lab.up(minions, timeout=60)
        (lab.directory / "states" / "big.bin").write_bytes(b"\x01" * (4 * 1024 * 1024))
        master_pid = int(lab.state["master"]["pid"])
        stop = threading.Event()
        sent: Counter[str] = Counter()
        pings: Counter[str] = Counter()
        latencies: list[float] = []
        kinds = ["fuzz", "hellos", "big", "storm", "reconnects", "unread_files"]
        threads = [Hostile(kind, lab, stop, sent) for kind in kinds]
        ping_thread = threading.Thread(target=pinger, args=(lab, stop, pings, latencies))
        try:
            for t in [*threads, ping_thread]:
                t.start()
            started = time.monotonic()
            samples: list[tuple[float, float]] = []
            while time.monotonic() - started < minutes * 60:
                if stop.wait(min(60.0, minutes * 60 - (time.monotonic() - started))):
                    break
                if not lab.running()["master"]:
                    raise RuntimeError("the master died")
                minute = round((time.monotonic() - started) / 60, 1)
                samples.append((minute, rss_mb(master_pid)))
                print(
                    f"  {minute:5.1f} min: master RSS {samples[-1][1]:.1f} MB; pings {dict(pings)}",
                    flush=True,
                )
            stop.set()
            for t in [*threads, ping_thread]:
                t.join(timeout=30)
            with lab.client(timeout=30) as master:
                refusals = master.request("status")["refusals"]
            alive = lab.running()["master"]
        finally:
            stop.set()
            lab.down()
    warm = samples[0][1]
    return {
        "minutes": minutes,
        "rss_after_warmup_mb": round(warm, 1),
        "rss_end_mb": round(samples[-1][1], 1),
        "rss_ratio": round(samples[-1][1] / warm, 2),
        "rss_max_mb": round(max(r for _, r in samples), 1),
        "rss_by_minute": samples,
        "pings": dict(pings),
        "ping_p50_s": round(sorted(latencies)[len(latencies) // 2], 3) if latencies else None,
        "sent": dict(sent),
        "refusals": dict(sorted(refusals.items())),
        "master_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--minions", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    r = soak(args.minutes, args.minions)
    print(
        f"{r['minutes']} min: master RSS {r['rss_after_warmup_mb']} MB after warm-up, "
        f"{r['rss_end_mb']} MB at the end (x{r['rss_ratio']}, max {r['rss_max_mb']} MB); "
        f"pings {r['pings']} (p50 {r['ping_p50_s']} s); sent {r['sent']}; "
        f"master alive: {r['master_alive']}"
    )
    print(f"refusals: {r['refusals']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
