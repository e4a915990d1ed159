"""What the e2e tests share: a writer on the leader, waiting on the bus, reading the audit."""

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg2  # type: ignore[import-untyped]

from saline.lab.chefha import pg
from saline.lab.chefha.cluster import ChefLab, lab_record
from tests.support import wait_for


@dataclass
class Writer:
    """Inserts numbered rows into the leader until stopped; every commit is remembered."""

    chef: ChefLab
    table: str
    committed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def leader(self) -> Any:
        data = lab_record(self.chef.directory)
        node = data["nodes"][data["leader"]]
        return node, node["services"]["postgresql"], data["secrets"]["password"]

    def __enter__(self) -> "Writer":
        node, svc, password = self.leader()
        pg.query(node["address"], svc, password, f"CREATE TABLE {self.table} (n int primary key)")
        self._thread.start()
        wait_for(lambda: len(self.committed) > 5, 10, "the writer to commit")
        return self

    def _run(self) -> None:
        node, svc, password = self.leader()
        conn = pg.connect(node["address"], svc, password)
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} VALUES (%s)", (n,))
                self.committed.append(n)
            except psycopg2.Error as e:  # the leader must stay writable: any error fails
                self.errors.append(str(e))
            self._stop.wait(0.01)
        conn.close()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def rows_on(self, name: str) -> set[int]:
        data = lab_record(self.chef.directory)
        node = data["nodes"][name]
        rows = pg.query(
            node["address"], node["services"]["postgresql"], data["secrets"]["password"],
            f"SELECT n FROM {self.table}",
        )  # fmt: skip
        return {int(r[0]) for r in rows}


def reactions(chef: ChefLab, rule: str) -> list[dict[str, Any]]:
    with chef.lab.client() as master:
        history = master.request("reactor_history", limit=500)
    return [r for r in history["reactions"] if r["rule"] == rule]


def fired_since(chef: ChefLab, rule: str, since: float) -> list[dict[str, Any]]:
    return [r for r in reactions(chef, rule) if r["verdict"] == "fire" and r["at"] >= since]


def settled(chef: ChefLab, rule: str, since: float) -> list[dict[str, Any]]:
    """Reactions of ``rule`` fired since ``since`` that have finished (ok or failed)."""
    done = [r for r in fired_since(chef, rule, since) if r.get("outcome") in ("ok", "failed")]
    return done


def now() -> float:
    return time.time()
