"""Returner throughput: documents through the on-disk queue and the Elasticsearch returner
(the official client's bulk helper over real HTTP) into the lab's stand-in.

    python tests/bench/returner.py [--docs 50000] [--batch 500] --json OUT.json

1. Drain: N event documents queued on disk while the stand-in is away, then shipped when it
   comes back (what a master does after an outage): documents/s from its return to empty.
2. Steady: N documents offered at once with the stand-in up: documents/s end to end
   (hand-over, disk, bulk). Each run checks every document arrived once.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from master.metrics import MasterMetrics
from master.returners.base import Doc, event_docs
from master.returners.elasticsearch import ElasticsearchReturner
from master.returners.pump import Worker
from master.returners.queue import DiskQueue
from master.store.base import EventRecord
from saline.lab.es_standin import EsStandin
from saline.lab.lab import free_port


def docs(count: int, start: int) -> list[Doc]:
    data = {"state": "out_of_sync", "lag_bytes": 123456, "leader": "be1", "note": "x" * 200}
    return [
        d
        for seq in range(start, start + count)
        for d in event_docs(EventRecord("saline/beacon/be2/pg_replication/out_of_sync", data,
                                        "be2", time.time(), seq=seq))
    ]  # fmt: skip


def wait_empty(worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while worker.status()["queued"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"not drained after {timeout:g}s: {worker.status()}")
        time.sleep(0.01)


def run(count: int, batch: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    es = EsStandin(version="9.1.0")
    returner = ElasticsearchReturner("bench", [f"http://127.0.0.1:{port}"], timeout=5)
    worker = Worker(returner, DiskQueue(tmp / "q", count * 2), frozenset({"events"}), batch,
                    MasterMetrics())  # fmt: skip
    worker.start()
    try:
        offered = time.monotonic()
        worker.offer(docs(count, 1))
        while worker.status()["queued"] < count:  # all on disk while Elasticsearch is away
            time.sleep(0.01)
        queued = time.monotonic() - offered
        es.start("127.0.0.1", port)
        back = time.monotonic()
        wait_empty(worker, 600)
        drain = time.monotonic() - back
        start = time.monotonic()
        worker.offer(docs(count, count + 1))
        wait_empty(worker, 600)
        steady = time.monotonic() - start
        stored = es.documents
        assert len(stored.indices["saline-events"]) == 2 * count
        assert set(stored.writes.values()) == {1}
        return {
            "docs": count,
            "batch": batch,
            "queued_on_disk_per_s": round(count / queued),
            "drain_after_outage_per_s": round(count / drain),
            "steady_per_s": round(count / steady),
            "bulk_requests": stored.bulk_requests,
        }
    finally:
        worker.stop()
        returner.close()
        es.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.docs, args.batch, Path(tmp))
    for key, value in result.items():
        print(f"{key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
