"""Fan-out benchmark: a real master, N simulated minions speaking the real protocol.

    python tests/bench/fanout.py --minions 1000 [--runs 10] [--procs 2] --json OUT.json

Simulated minions are CURVE DEALER sockets (P worker processes, N/P sockets each, one
zmq Poller per worker) that say hello, send heartbeats and answer test.ping at once.
Each run times the client API ``run`` op from request to ``done``.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, cast

import yaml
import zmq

from saline.client import MasterClient
from saline.codec import decode_from_master, encode
from saline.errors import ClientError
from saline.keys import KeyPair, KeyRing, generate_keypair, load_or_create_keypair
from saline.lab.lab import free_port
from saline.lab.processes import saline_argv, spawn, stop
from saline.protocol import Ack, Heartbeat, Hello, Job, Pending, Refused, Rehello, Return, Welcome
from saline.transport import connect_dealer, tcp_address

Ident = tuple[str, str, str]  # (minion id, public, secret)
HEARTBEAT_S = 5.0
HELLO_RETRY_S = 3.0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(idents: list[Ident], master_pub: str, address: str, stop_ev: MpEvent) -> None:
    """Simulate ``idents`` minions until ``stop_ev`` is set; print counters at the end."""
    raise_nofile()
    ctx = zmq.Context(io_threads=1)
    ctx.set(zmq.MAX_SOCKETS, len(idents) + 64)  # default 1023
    poller = zmq.Poller()
    socks: dict[zmq.Socket[Any], str] = {}
    welcomed: dict[str, bool] = {}
    hello_at: dict[str, float] = {}
    stats = {"jobs": 0, "returns": 0, "acks": 0, "refused": 0, "pending": 0, "bad": 0}
    hellos = {
        i: encode(Hello(id=i, grains={"role": "bench"}, version="bench")) for i, _, _ in idents
    }
    beats = {i: encode(Heartbeat(id=i)) for i, _, _ in idents}
    by_id: dict[str, zmq.Socket[Any]] = {}
    for minion_id, public, secret in idents:
        sock = cast(
            zmq.Socket[Any],
            connect_dealer(cast(Any, ctx), KeyPair(public, secret), master_pub, address, 1 << 24),
        )
        sock.send(hellos[minion_id])
        hello_at[minion_id] = time.monotonic()
        welcomed[minion_id] = False
        socks[sock] = minion_id
        by_id[minion_id] = sock
        poller.register(sock, zmq.POLLIN)
    ids = list(by_id)
    tick = 0
    next_tick = time.monotonic() + 1.0
    try:
        while not stop_ev.is_set():
            for sock, _ in poller.poll(200):
                minion_id = socks[sock]
                while True:
                    try:
                        data = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = decode_from_master(data, 1 << 24)
                    except Exception:
                        stats["bad"] += 1
                        continue
                    if isinstance(msg, Job):
                        stats["jobs"] += 1
                        ret = Return(
                            jid=msg.jid,
                            id=minion_id,
                            fun=msg.fun,
                            success=True,
                            retcode=0,
                            ret=True,
                        )
                        sock.send(encode(ret), zmq.NOBLOCK)
                        stats["returns"] += 1
                    elif isinstance(msg, Ack):
                        stats["acks"] += len(msg.jids)
                    elif isinstance(msg, Welcome):
                        welcomed[minion_id] = True
                    elif isinstance(msg, Rehello):
                        sock.send(hellos[minion_id], zmq.NOBLOCK)
                    elif isinstance(msg, Pending):
                        stats["pending"] += 1
                    elif isinstance(msg, Refused):
                        stats["refused"] += 1
            now = time.monotonic()
            if now < next_tick:
                continue
            # once a second: heartbeats for one fifth of the minions, hello retries
            next_tick = now + 1.0
            tick += 1
            for n, minion_id in enumerate(ids):
                sock = by_id[minion_id]
                if not welcomed[minion_id]:
                    if now - hello_at[minion_id] >= HELLO_RETRY_S:
                        sock.send(hellos[minion_id], zmq.NOBLOCK)
                        hello_at[minion_id] = now
                elif n % int(HEARTBEAT_S) == tick % int(HEARTBEAT_S):
                    sock.send(beats[minion_id], zmq.NOBLOCK)
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
        print(f"worker {os.getpid()}: {stats}", file=sys.stderr, flush=True)


def write_master(tmp: Path, ids: list[str]) -> tuple[Path, KeyPair, list[Ident]]:
    pki = tmp / "pki"
    master_keys = load_or_create_keypair(pki, "master")
    KeyRing(pki)  # lays out minions/, minions_pre/, minions_rejected/
    idents: list[Ident] = []
    for minion_id in ids:  # direct writes: KeyRing.add re-reads the ring on every call
        pair = generate_keypair()
        (pki / "minions" / minion_id).write_text(pair.public + "\n")
        idents.append((minion_id, pair.public, pair.secret))
    cfg = {
        "interface": "127.0.0.1",
        "port": free_port(),
        "pki_dir": str(pki),
        "data_dir": str(tmp / "data"),
        "sock_dir": str(tmp / "s"),
        "log_file": str(tmp / "master.log"),
        "presence_timeout": 30.0,
        "job_timeout": 30.0,
    }
    path = tmp / "master.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, master_keys, idents


def wait_online(sock: Path, n: int, timeout: float, procs: list[BaseProcess]) -> float:
    """Seconds until the master answers ``status`` with at least ``n`` minions online."""
    started = time.monotonic()
    count = -1
    while time.monotonic() - started < timeout:
        if any(p.exitcode is not None for p in procs):
            raise RuntimeError("a simulator worker exited early")
        try:
            with MasterClient(sock, timeout=10) as c:
                count = len(c.request("status")["online"])
        except ClientError:
            count = -1
        if count >= n:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"only {count}/{n} minions online after {timeout:g}s")


def one_run(sock: Path, timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    first_ret = last_ret = job_at = sent_at = 0.0
    rets = 0
    with MasterClient(sock, timeout=timeout + 30) as c:
        for m in c.stream("run", target="*", fun="test.ping", timeout=timeout):
            if m["type"] == "job":
                job_at = time.perf_counter() - t0
            elif m["type"] == "sent":
                sent_at = time.perf_counter() - t0
            elif m["type"] == "ret":
                last_ret = time.perf_counter() - t0
                first_ret = first_ret or last_ret
                rets += 1
            elif m["type"] == "done":
                return {
                    "s": time.perf_counter() - t0,
                    "succeeded": len(m["succeeded"]),
                    "ret_messages": rets,
                    "job_msg_s": job_at,
                    "sent_msg_s": sent_at,
                    "first_ret_s": first_ret,
                    "last_ret_s": last_ret,
                    "timed_out": len(m["timed_out"]),
                    "not_reached": len(m["not_reached"]),
                }
    raise RuntimeError("stream ended without done")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0, help="job timeout, s")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    raise_nofile()  # the master and workers inherit the raised limit
    tmp = Path(tempfile.mkdtemp(prefix="slb-"))
    ids = [f"sim{i:05d}" for i in range(a.minions)]
    t = time.monotonic()
    cfg, master_keys, idents = write_master(tmp, ids)
    print(f"{a.minions} keys generated and accepted in {time.monotonic() - t:.1f}s")
    sock = tmp / "s" / "client.sock"
    pid = spawn(saline_argv(cfg, "master"), tmp / "master.out")
    address = tcp_address("127.0.0.1", yaml.safe_load(cfg.read_text())["port"])
    mpc = mp.get_context("spawn")
    stop_ev = mpc.Event()
    workers = [
        mpc.Process(
            target=worker, args=(idents[i :: a.procs], master_keys.public, address, stop_ev)
        )
        for i in range(a.procs)
    ]
    ok = False
    try:
        wait_online(sock, 0, 30, [])  # master up
        idle_rss = rss_mb(pid)
        for w in workers:
            w.start()
        online_s = wait_online(sock, a.minions, 120, workers)
        print(f"all {a.minions} online after {online_s:.2f}s (master RSS {rss_mb(pid):.1f} MB)")
        warm = [one_run(sock, a.timeout) for _ in range(a.warmup)]
        results = [one_run(sock, a.timeout) for _ in range(a.runs)]
        master_rss = rss_mb(pid)
        ok = True
    finally:
        stop_ev.set()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
                w.join()
        stop({pid: str(cfg)})
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"failed; master logs kept in {tmp}", file=sys.stderr)
    times = [r["s"] for r in results]
    returned = [r["succeeded"] for r in results]
    out: dict[str, Any] = {
        "minions": a.minions,
        "runs": a.runs,
        "procs": a.procs,
        "p50_s": statistics.median(times),
        "p99_s": pct(times, 0.99),
        "min_s": min(times),
        "max_s": max(times),
        "warmup_s": [r["s"] for r in warm],
        "job_msg_p50_s": statistics.median(r["job_msg_s"] for r in results),
        "sent_msg_p50_s": statistics.median(r["sent_msg_s"] for r in results),
        "first_ret_p50_s": statistics.median(r["first_ret_s"] for r in results),
        "last_ret_p50_s": statistics.median(r["last_ret_s"] for r in results),
        "returned_per_run": returned,
        "all_returned": all(n == a.minions for n in returned),
        "online_s": online_s,
        "master_rss_idle_mb": idle_rss,
        "master_rss_mb": master_rss,
    }
    for r in results:
        if r["succeeded"] != a.minions:
            print(f"WARNING: run returned {r['succeeded']}/{a.minions}: {r}")
    print(
        f"N={a.minions} runs={a.runs}: p50 {out['p50_s']:.3f}s p99 {out['p99_s']:.3f}s "
        f"min {out['min_s']:.3f}s max {out['max_s']:.3f}s; all returned: {out['all_returned']};"
        f" master RSS {master_rss:.1f} MB (idle before minions {idle_rss:.1f} MB)"
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
