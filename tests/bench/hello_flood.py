"""A flood of hellos from fresh keys against a real lab master, and test.ping meanwhile.

    python tests/bench/hello_flood.py [--keys 10000] [--minions 6] --json OUT.json

Two runs, each on a fresh lab (a real master and minion processes):

* ``defaults``: the master as shipped. Most fresh keys are refused at the handshake
  (``new_key_rate``), at most ``max_pending_keys`` are filed.
* ``unlimited``: rate limits and the pending cap lifted, so every key is filed: what the
  key ring costs per new key when it holds 10,000 of them.

Printed for each: hellos sent and their wall time, what the master counted, and
``test.ping`` to the lab's minions (through the client API) idle and during the flood,
p50 and p90. Target: 10,000 hellos in under 60 s, ping p50 during the flood within 2x idle.
"""

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from saline.codec import encode
from saline.keys import read_keypair
from saline.lab.lab import Lab
from saline.protocol import Hello
from saline.transport import tcp_address

UNLIMITED = {
    "new_key_rate": 1e6,
    "new_key_burst": 1e6,
    "new_key_rate_per_address": 1e6,
    "new_key_burst_per_address": 1e6,
    "max_pending_keys": 1_000_000,
}


def flood(address: str, master_pub: str, first: int, count: int, window: int) -> dict[str, int]:
    """Say hello from ``count`` fresh keys, ``window`` sockets at a time; count replies."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    replies = {"answered": 0, "unanswered": 0}
    n = first
    while n < first + count:
        ctx = zmq.Context()  # one per batch: closed sockets' descriptors go with it
        ctx.set(zmq.MAX_SOCKETS, window + 64)
        socks = []
        for _ in range(min(window, first + count - n)):
            public, secret = zmq.curve_keypair()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.CURVE_SERVERKEY, master_pub.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            sock.connect(address)
            sock.send(encode(Hello(id=f"flood-{n}")))
            socks.append(sock)
            n += 1
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        waiting = set(socks)
        deadline = time.monotonic() + 1.0
        while waiting and time.monotonic() < deadline:
            for sock, _ in poller.poll(100):
                if sock in waiting:
                    sock.recv()
                    waiting.discard(sock)
                    poller.unregister(sock)
        replies["answered"] += len(socks) - len(waiting)
        replies["unanswered"] += len(waiting)
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
    return replies


def _flood_worker(args: tuple[str, str, int, int, int], out: "mp.Queue[dict[str, int]]") -> None:
    out.put(flood(*args))


def pings(lab: Lab, stop: threading.Event, times: list[float], runs: int = 0) -> None:
    """``test.ping`` to every lab minion through the client API until ``stop`` (or ``runs``)."""
    while not stop.is_set() and (runs == 0 or len(times) < runs):
        started = time.perf_counter()
        with lab.client(timeout=60) as master:
            for message in master.stream("run", target="*", fun="test.ping", timeout=30):
                if message["type"] == "done":
                    if message["succeeded"] != sorted(lab.state["minions"]):
                        raise RuntimeError(f"ping failed during the flood: {message}")
                    break
        times.append(time.perf_counter() - started)


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"runs": len(ordered), "p50_s": statistics.median(ordered), "p90_s": p90}


def one(mode: str, keys: int, minions: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="saline-flood-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        lab.up(minions, timeout=60, extra_master=UNLIMITED if mode == "unlimited" else None)
        try:
            idle: list[float] = []
            pings(lab, threading.Event(), idle, runs=20)
            master_pub = read_keypair(lab.directory / "master" / "pki", "master").public
            address = tcp_address("127.0.0.1", int(lab.state["port"]))
            busy: list[float] = []
            stop = threading.Event()
            pinger = threading.Thread(target=pings, args=(lab, stop, busy))
            pinger.start()
            out: mp.Queue[dict[str, int]] = mp.Queue()
            share = keys // workers
            procs = [
                mp.Process(
                    target=_flood_worker,
                    args=((address, master_pub, w * share, share, 200), out),
                )
                for w in range(workers)
            ]
            started = time.perf_counter()
            for p in procs:
                p.start()
            results = [out.get(timeout=600) for _ in procs]
            flood_s = time.perf_counter() - started
            for p in procs:
                p.join()
            stop.set()
            pinger.join()
            with lab.client(timeout=60) as master:
                status = master.request("status")
            assert lab.running()["master"], "the master died"
        finally:
            lab.down()
    refusals = status["refusals"]
    return {
        "mode": mode,
        "hellos": share * workers,
        "flood_s": round(flood_s, 2),
        "hellos_per_s": round(share * workers / flood_s),
        "answered": sum(r["answered"] for r in results),
        "unanswered": sum(r["unanswered"] for r in results),
        "pending_filed": len(status["keys"]["pending"]),
        "refused": {k: refusals.get(k, 0) for k in ("new_key_rate", "pending_full")},
        "ping_idle": summary(idle),
        "ping_during_flood": summary(busy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--minions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["defaults", "unlimited"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = [one(mode, args.keys, args.minions, args.workers) for mode in args.modes]
    for r in results:
        idle, busy = r["ping_idle"], r["ping_during_flood"]
        print(
            f"{r['mode']:>9}: {r['hellos']} hellos in {r['flood_s']} s ({r['hellos_per_s']}/s);"
            f" answered {r['answered']}, filed pending {r['pending_filed']},"
            f" refused {r['refused']}; test.ping p50 idle {idle['p50_s']:.3f} s,"
            f" during the flood {busy['p50_s']:.3f} s (p90 {busy['p90_s']:.3f} s,"
            f" {busy['runs']} runs), ratio {busy['p50_s'] / idle['p50_s']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
