"""Reactor throughput and latency.

    python tests/bench/reactor.py [--events 20000] [--reactions 50] --json OUT.json

1. Ingest: events stored (SQLite, one transaction per batch of 1,000), published on the
   bus and matched against 100 rules inside a real ``Master`` object (not serving), with
   0 %, 1 % and 100 % of the events matching a rule (each such event is decided through
   every guard, the decision stored in the audit table and its audit event published).
   Rules are in dry_run mode so nothing is dispatched. Target: at least 20,000 events/s.
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
from pathlib import Path
from typing import Any

from master.config import MasterConfig
from master.daemon import Master
from master.store.base import EventRecord
from saline.lab.lab import Lab


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ingest(tmp: Path, count: int, decided_share: float) -> dict[str, Any]:
    """Ingest ``count`` events of which ``decided_share`` match one of the 100 rules."""
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
            '  throttle: {key: "{{ event.data.n % 7 }}", once_within: 1h}',
        ]
    (rules / "bench.yaml").write_text("\n".join(lines) + "\n")
    config = MasterConfig(
        pki_dir=tmp / "pki",
        data_dir=tmp / "data",
        sock_dir=tmp / "sock",
        reactor_dirs=[rules],
        file_roots=[tmp],
        pillar_roots=[tmp],
    )

    async def run() -> tuple[float, int]:
        master = Master(config)
        batch_size = 1000
        decided = 0
        started = time.perf_counter()
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
            decided += len(master.reactor.react(stored))
        elapsed = time.perf_counter() - started
        master.reactor.stop()
        master.store.close()
        return elapsed, decided

    elapsed, decided = asyncio.run(run())
    label = f"ingest_{round(decided_share * 100)}pct_decided"
    return {
        f"{label}_events": count,
        f"{label}_decisions": decided,
        f"{label}_events_per_s": count / elapsed,
    }


def latency(tmp: Path, reactions: int) -> dict[str, Any]:
    lab = Lab(tmp / "lab")
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
        lab.up(1)
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
        db = sqlite3.connect(lab.directory / "master" / "data" / "jobs.sqlite")
        fired = [
            t for (t,) in db.execute("SELECT ts FROM events WHERE tag='bench/e2e' ORDER BY seq")
        ]
        jobs = db.execute(
            "SELECT j.created, r.received FROM jobs j JOIN returns r ON r.jid = j.jid"
            " WHERE j.user = 'reactor:bench-e2e' ORDER BY j.jid"
        ).fetchall()
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--reactions", type=int, default=50)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slr-"))
    try:
        out: dict[str, Any] = {"ingest_rules": 100}
        for share in (0.0, 0.01, 1.0):
            work = tmp / f"ingest{share}"
            work.mkdir()
            out.update(ingest(work, a.events, share))
        out.update(latency(tmp, a.reactions))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for key, value in out.items():
        print(f"{key:22} {value:.2f}" if isinstance(value, float) else f"{key:22} {value}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
