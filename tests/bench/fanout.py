"""Fan-out benchmark: a real master, N simulated minions speaking the real protocol.

    python tests/bench/fanout.py --minions 1000 [--runs 10] [--procs 2] --json OUT.json

Simulated minions are CURVE DEALER sockets (P worker processes, N/P sockets each, one
zmq Poller per worker) that say hello, send heartbeats and answer test.ping at once.
Each run times the client API ``run`` op from request to ``done``. Workers stamp each
job (first/last receipt, last return sent) with the system-wide monotonic clock, so the
report splits a run into master dispatch, minion side and master collection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import queue
import resource
import select
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as MpQueue
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
BEAT_EVERY = 5  # seconds between heartbeats of one simulated minion
HELLO_RETRY_S = 3.0
CPU_NAMES = ("master_main", "master_zmq_threads", "simulators", "machine_busy", "master_main_runq")
TIMELINE = ("job_msg_s", "sent_msg_s", "minion_first_recv_s", "minion_last_recv_s")
TIMELINE += ("minion_last_sent_s", "first_ret_s", "last_ret_s")
PING_OK: dict[str, Any] = {"success": True, "retcode": 0, "ret": True}
#: the transport's own DEALER set-up, on a plain (not asyncio) context
dealer = cast(Callable[..., "zmq.Socket[Any]"], connect_dealer)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_now(master: int, workers: list[int]) -> list[float]:
    """CPU seconds: [master main thread, master other threads, workers, whole machine busy,
    master main thread runnable but waiting for a CPU (schedstat)]."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = [0.0, 0.0, 0.0]
    for slot, pid in [(0, master)] + [(2, w) for w in workers]:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu[slot + (slot == 0 and task.name != str(pid))] += int(fields[11]) + int(fields[12])
    total = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    wait_ns = int(Path(f"/proc/{master}/task/{master}/schedstat").read_text().split()[1])
    return [c / tick for c in cpu] + [(sum(total) - total[3] - total[4]) / tick, wait_ns / 1e9]


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
    stats = dict.fromkeys(("jobs", "acks", "pending", "refused", "bad"), 0)
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
                    elif isinstance(msg, Ack):
                        stats["acks"] += len(msg.jids)
                    elif isinstance(msg, Welcome):
                        hello_at.pop(minion_id, None)
                    elif isinstance(msg, Rehello):
                        sock.send(hellos[minion_id], zmq.NOBLOCK)
                    elif isinstance(msg, Pending | Refused):
                        stats[msg.kind] += 1
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


def write_master(tmp: Path, ids: list[str]) -> tuple[Path, KeyPair, list[Ident]]:
    pki = tmp / "pki"
    master_keys = load_or_create_keypair(pki, "master")
    KeyRing(pki)  # lays out minions/, minions_pre/, minions_rejected/
    idents: list[Ident] = []
    for minion_id in ids:  # direct writes: KeyRing.add re-reads the whole ring on every call
        pair = generate_keypair()
        (pki / "minions" / minion_id).write_text(pair.public + "\n")
        idents.append((minion_id, pair.public, pair.secret))
    cfg = {
        "interface": "127.0.0.1",
        "port": free_port(),
        "pki_dir": str(pki),
        "data_dir": str(tmp / "data"),
        "sock_dir": str(tmp / "s"),  # the client socket path must stay under ~100 chars
        "log_file": str(tmp / "master.log"),
        "presence_timeout": 30.0,
        "job_timeout": 30.0,
    }
    path = tmp / "master.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, master_keys, idents


def wait_online(sock: Path, n: int, timeout: float, procs: list[BaseProcess]) -> float:
    """Seconds until ``status`` reports at least ``n`` online (polled at most 4x a second:
    the status op itself is O(keys) on the master)."""
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
        time.sleep(0.05 if n <= 100 else 0.25)
    raise RuntimeError(f"only {count}/{n} minions online after {timeout:g}s")


def one_run(sock: Path, timeout: float) -> dict[str, Any]:
    r: dict[str, Any] = {"t0": time.monotonic(), "rets": 0}
    with MasterClient(sock, timeout=timeout + 30) as c:
        for m in c.stream("run", target="*", fun="test.ping", timeout=timeout):
            at = time.monotonic() - r["t0"]
            if m["type"] == "job":
                r["jid"], r["job_msg_s"] = m["jid"], at
            elif m["type"] == "sent":
                r["sent_msg_s"] = at
            elif m["type"] == "ret":
                r.setdefault("first_ret_s", at)
                r["last_ret_s"], r["rets"] = at, r["rets"] + 1
            elif m["type"] == "done":
                r["s"], r["succeeded"] = at, len(m["succeeded"])
                r["timed_out"], r["not_reached"] = len(m["timed_out"]), len(m["not_reached"])
                return r
    raise RuntimeError("stream ended without done")


def measure(a: argparse.Namespace, pid: int, sock: Path, workers: list[BaseProcess]) -> Any:
    out: dict[str, Any] = {"minions": a.minions, "runs": a.runs, "procs": a.procs}
    wait_online(sock, 0, 30, [])
    out["master_rss_idle_mb"] = rss_mb(pid)
    for w in workers:
        w.start()
    out["online_s"] = wait_online(sock, a.minions, 300, workers)
    out["master_rss_online_mb"] = rss_mb(pid)
    t = time.perf_counter()
    with MasterClient(sock) as c:
        c.request("status")
    out["status_op_s"] = time.perf_counter() - t
    print(f"all online after {out['online_s']:.2f}s; status op {out['status_op_s']:.3f}s")
    out["warmup_s"] = [one_run(sock, a.timeout)["s"] for _ in range(a.warmup)]
    wpids = [w.pid or 0 for w in workers]
    cpu0, wall0 = cpu_now(pid, wpids), time.monotonic()
    results = [one_run(sock, a.timeout) for _ in range(a.runs)]
    cpu1, wall = cpu_now(pid, wpids), time.monotonic() - wall0
    for name, before, after in zip(CPU_NAMES, cpu0, cpu1, strict=True):
        out[f"cpu_pct_{name}"] = 100 * (after - before) / wall  # % of one core
    # robust to a busy machine: master main-thread CPU per minion per job
    out["master_cpu_us_per_minion_job"] = 1e6 * (cpu1[0] - cpu0[0]) / (a.runs * a.minions)
    out["master_rss_mb"] = rss_mb(pid)
    return out, results


def report(out: dict[str, Any], results: list[dict[str, Any]], sims: list[Any]) -> None:
    for r in results:  # minion-side stamps, relative to the request
        stamps = [tl[r["jid"]] for _, tl in sims if r["jid"] in tl]
        r["minion_first_recv_s"] = min(s[0] for s in stamps) - r["t0"]
        r["minion_last_recv_s"] = max(s[1] for s in stamps) - r["t0"]
        r["minion_last_sent_s"] = max(s[2] for s in stamps) - r["t0"]
        if r["succeeded"] != out["minions"]:
            print(f"WARNING: a run returned {r['succeeded']}/{out['minions']}: {r}")
    times = sorted(r["s"] for r in results)
    returned = [r["succeeded"] for r in results]
    out |= {
        "p50_s": statistics.median(times),
        "p99_s": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "min_s": times[0],
        "max_s": times[-1],
        "returned_per_run": returned,
        "all_returned": all(n == out["minions"] for n in returned),
        "simulators": [s for s, _ in sims],
    }
    for key in TIMELINE:
        out[f"timeline_p50_{key}"] = statistics.median(r.get(key, math.nan) for r in results)
    for key, value in out.items():
        if key not in ("returned_per_run", "simulators"):
            print(f"{key:36} {value:.3f}" if isinstance(value, float) else f"{key:36} {value}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0, help="job timeout, s")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    raise_nofile()  # the master and the workers inherit the raised limit
    tmp = Path(tempfile.mkdtemp(prefix="slb-"))
    cfg, master_keys, idents = write_master(tmp, [f"sim{i:05d}" for i in range(a.minions)])
    address = tcp_address("127.0.0.1", yaml.safe_load(cfg.read_text())["port"])
    mpc = mp.get_context("spawn")
    stop_ev, results_q = mpc.Event(), mpc.Queue()
    args = [
        (idents[i :: a.procs], master_keys.public, address, stop_ev, results_q)
        for i in range(a.procs)
    ]
    workers = [mpc.Process(target=worker, args=w_args) for w_args in args]
    pid = spawn(saline_argv(cfg, "master"), tmp / "master.out")
    ok, sims = False, []
    try:
        out, results = measure(a, pid, tmp / "s" / "client.sock", workers)
        ok = True
    finally:
        stop_ev.set()
        with contextlib.suppress(queue.Empty):
            sims = [results_q.get(timeout=20) for w in workers if w.pid is not None]
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
        stop({pid: str(cfg)})
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"failed; master logs kept in {tmp}", file=sys.stderr)
    report(out, results, sims)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
