"""Reactor throughput and latency.

    python tests/bench/reactor.py [--events 20000] [--reactions 50]
        [--store sqlite,postgresql] --json OUT.json

Every measurement runs once per store of ``--store`` (both by default; PostgreSQL is a real
server started by the masters lab's helper, see ``pgstore.py``, a new database for each
measurement), and the report has one section per store.

1. Ingest: events stored (one transaction per batch of 1,000), published on the
   bus and matched against 100 rules inside a real ``Master`` object (not serving), with
   0 %, 1 % and 100 % of the events matching a rule (each such event is decided through
   every guard, the decision stored in the audit table and its audit event published).
   Rules are in dry_run mode so nothing is dispatched. Targets: at least 20,000 events/s
   on SQLite, 10,000 on PostgreSQL. Also the CPU seconds per 1,000 events of this process
   (the master's code) and, on PostgreSQL, of the server (all its backends).
2. Latency on a real lab (master + one minion process): an event put on the bus (the
   client API's ``fire``) -> rule -> ``test.ping`` job on the minion -> return stored.
   From the store's own timestamps: event stored -> job created (dispatch latency;
   target p50 < 5 ms, p99 < 50 ms) and event stored -> return stored (end to end; target
   p50 < 10 ms; SaltStack's reactor takes about 92 ms for this on this machine).
"""

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]
from pgstore import PgServer, add_store_option, cpu_s, pg_server

from master.config import MasterConfig
from master.daemon import Master
from master.store.base import EventRecord
from saline.lab.lab import Lab


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ingest(tmp: Path, count: int, decided_share: float, pg: PgServer | None) -> dict[str, Any]:
    """Ingest ``count`` events of which ``decided_share`` match one of the 100 rules, on
    SQLite in ``tmp`` or (``pg``) on a new database of that server."""
    rules = tmp / "rules"
    rules.mkdir()
    lines = []
    for i in range(100):
        lines += [
            f"- name: rule{i:03d}",
            f"  on: bench/rule{i:03d}/*",
            "  mode: dry_run",
            '  when: "event.data.n >= 0"',
            "  do:",
            '    - fire: {tag: bench/out, data: {n: "{{ event.data.n }}"}}',
            # a key per event: each decided one passes every guard to a dry-run decision
            # (a shared key would measure the throttle's skip path instead)
            '  throttle: {key: "{{ event.data.n }}", once_within: 1h}',
        ]
    (rules / "bench.yaml").write_text("\n".join(lines) + "\n")
    config = MasterConfig(
        pki_dir=tmp / "pki",
        data_dir=tmp / "data",
        sock_dir=tmp / "sock",
        reactor_dirs=[rules],
        file_roots=[tmp],
        pillar_roots=[tmp],
        store="sqlite" if pg is None else str(pg.database()),
    )

    async def run() -> tuple[float, float, float, int, Counter[str]]:
        master = Master(config)
        batch_size = 1000
        decided = 0
        verdicts: Counter[str] = Counter()
        server0 = 0.0 if pg is None else cpu_s(pg.pid)
        cpu0, started = time.process_time(), time.perf_counter()
        for first in range(0, count, batch_size):
            every = max(round(1 / decided_share), 1) if decided_share else 0
            batch = [
                EventRecord(
                    f"bench/rule{n % 100:03d}/x" if every and n % every == 0 else f"bench/obs/{n}",
                    {"n": n},
                    "be1",
                    time.time(),
                )
                for n in range(first, min(first + batch_size, count))
            ]
            stored = master.bus.publish_records(batch)
            made = master.reactor.react(stored)
            decided += len(made)
            verdicts.update(d.verdict.value for d in made)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        server = 0.0 if pg is None else cpu_s(pg.pid) - server0
        master.reactor.stop()
        master.store.close()
        return elapsed, cpu, server, decided, verdicts

    elapsed, cpu, server, decided, verdicts = asyncio.run(run())
    label = f"ingest_{round(decided_share * 100)}pct_decided"
    out = {
        f"{label}_events": count,
        f"{label}_decisions": decided,
        # what the decisions were: dry_run when each passed every guard
        f"{label}_verdicts": ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())) or "-",
        f"{label}_events_per_s": count / elapsed,
        f"{label}_master_cpu_s_per_1k": 1000 * cpu / count,
    }
    if pg is not None:
        out[f"{label}_server_cpu_s_per_1k"] = 1000 * server / count
    return out


def latency(tmp: Path, reactions: int, pg: PgServer | None) -> dict[str, Any]:
    lab = Lab(tmp / "lab")
    dsn_file = None if pg is None else pg.database()
    (lab.directory / "reactors").mkdir(parents=True)
    (lab.directory / "reactors" / "bench.yaml").write_text(
        textwrap.dedent(
            """\
            - name: bench-e2e
              on: bench/e2e
              do:
                - run: {target: be1, function: test.ping}
              throttle: {key: "{{ event.data.n }}", once_within: 1s}
              cooldown: 0
              flap: null
            """
        )
    )
    try:
        lab.up(1, extra_master=None if dsn_file is None else {"store": str(dsn_file)})
        with lab.client() as master:
            master.request("fire", tag="bench/warmup", data={})
            for n in range(reactions):
                master.request("fire", tag="bench/e2e", data={"n": n})
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # one reaction at a time: pure latency
                    rows = master.request("reactor_history", limit=1, rule="bench-e2e")
                    if rows["history"] and rows["history"][0]["outcome"]:
                        break
                    time.sleep(0.005)
        fired, jobs = timestamps(lab, pg, dsn_file)
    finally:
        lab.down()
    dispatch = [(created - ts) * 1000 for ts, (created, _) in zip(fired, jobs, strict=True)]
    e2e = [(received - ts) * 1000 for ts, (_, received) in zip(fired, jobs, strict=True)]
    return {
        "reactions": len(jobs),
        "dispatch_p50_ms": statistics.median(dispatch),
        "dispatch_p99_ms": pct(dispatch, 99),
        "e2e_p50_ms": statistics.median(e2e),
        "e2e_p99_ms": pct(e2e, 99),
    }


def timestamps(
    lab: Lab, pg: PgServer | None, dsn_file: Path | None
) -> tuple[list[float], list[tuple[float, float]]]:
    """The store's own times: each bench/e2e event stored; its job created, return stored."""
    events = "SELECT ts FROM events WHERE tag='bench/e2e' ORDER BY seq"
    jobs = (
        "SELECT j.created, r.received FROM jobs j JOIN returns r ON r.jid = j.jid"
        " WHERE j.{user} = 'reactor:bench-e2e' ORDER BY j.jid"
    )
    if pg is None or dsn_file is None:
        db = sqlite3.connect(lab.directory / "master" / "data" / "jobs.sqlite")
        try:
            fired = [t for (t,) in db.execute(events)]
            return fired, list(db.execute(jobs.format(user="user")))
        finally:
            db.close()
    conn = psycopg2.connect(pg.dsn(dsn_file.stem))
    try:
        with conn.cursor() as cur:
            cur.execute(events)
            fired = [t for (t,) in cur.fetchall()]
            cur.execute(jobs.format(user="user_name"))
            return fired, list(cur.fetchall())
    finally:
        conn.close()


def measure(tmp: Path, a: argparse.Namespace, pg: PgServer | None) -> dict[str, Any]:
    out: dict[str, Any] = {"ingest_rules": 100}
    for percent in a.decided:
        work = tmp / f"ingest{percent}"
        work.mkdir(parents=True)
        out.update(ingest(work, a.events, percent / 100, pg))
    if a.reactions:
        out.update(latency(tmp, a.reactions, pg))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument(
        "--decided",
        type=lambda text: [float(p) for p in text.split(",")],
        default=[0.0, 1.0, 100.0],
        metavar="PCTS",
        help="ingest runs: %% of the events decided, comma-separated (default: 0,1,100)",
    )
    ap.add_argument("--reactions", type=int, default=50, help="0: no latency run")
    add_store_option(ap)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slr-"))
    out: dict[str, Any] = {"events": a.events, "stores": a.store}
    try:
        for store in a.store:
            if store == "sqlite":
                out[store] = measure(tmp / store, a, None)
            else:
                with pg_server() as pg:
                    out[store] = measure(tmp / store, a, pg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    longest = max((out[store] for store in a.store), key=len)  # PostgreSQL's has more
    keys = list(dict.fromkeys([*longest, *(k for store in a.store for k in out[store])]))
    print(f"{'':42}" + "".join(f"{store:>12}" for store in a.store))
    for key in keys:
        cells = [out[store].get(key, "-") for store in a.store]
        line = "".join(f"{c:14.3f}" if isinstance(c, float) else f"{c!s:>14}" for c in cells)
        print(f"{key:42}{line}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
