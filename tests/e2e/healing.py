"""What the e2e tests share: a writer on the leader, the bus, the audit trail."""

import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg2  # type: ignore[import-untyped]

from saline.lab.chefha import pg
from saline.lab.chefha.cluster import ChefLab, lab_record
from tests import support
from tests.support import wait_for


def saline(chef: ChefLab, *args: str) -> subprocess.CompletedProcess[str]:
    return support.saline(chef.lab, *args, timeout=120)


def events(chef: ChefLab, since: int = 0, tag: str = "*") -> list[dict[str, Any]]:
    """Stored events after seq ``since`` matching ``tag``, oldest first."""
    return support.events(chef.lab, tag, since)


def last_seq(chef: ChefLab) -> int:
    stored = events(chef)
    return int(stored[-1]["seq"]) if stored else 0


def wait_event(chef: ChefLab, since: int, tag: str, timeout: float = 60.0) -> dict[str, Any]:
    """The first event after ``since`` whose tag matches the glob ``tag``."""
    found = wait_for(lambda: events(chef, since, tag), timeout, f"an event {tag}")
    return found[0]


def reactions(chef: ChefLab, rule: str) -> list[dict[str, Any]]:
    with chef.lab.client() as master:
        history: list[dict[str, Any]] = master.request("reactor_history", limit=1000, rule=rule)[
            "history"
        ]
    return history


def trail(chef: ChefLab, rule: str, since: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The finished reaction of ``rule`` to an event after ``since``, and its jobs' returns.

    Asserts the chain the audit must show: event -> rule -> job(s) -> outcome. Each return
    event carries the reaction's cause (the event's seq) and rule.
    """
    fired = wait_for(
        lambda: [
            r
            for r in reactions(chef, rule)
            if r["verdict"] == "fire" and (r["event_seq"] or 0) > since and r["outcome"]
        ],
        120,
        f"a finished reaction of {rule}",
    )
    reaction = min(fired, key=lambda r: r["event_seq"])
    (cause,) = events(chef, reaction["event_seq"] - 1, reaction["event_tag"])[:1]
    assert cause["seq"] == reaction["event_seq"]
    returns = [
        e
        for e in events(chef, since, "saline/job/*/ret/*")
        if e["cause"] == reaction["event_seq"] and e["rule"] == rule
    ]
    return reaction, returns


@dataclass
class Writer:
    """Inserts numbered rows into the leader until stopped; every commit is remembered."""

    chef: ChefLab
    table: str
    committed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _leader(self) -> tuple[dict[str, Any], dict[str, Any], str]:
        data = lab_record(self.chef.directory)
        node = data["nodes"][data["leader"]]
        return node, node["services"]["postgresql"], data["secrets"]["password"]

    def __enter__(self) -> "Writer":
        node, svc, password = self._leader()
        pg.query(node["address"], svc, password, f"CREATE TABLE {self.table} (n int primary key)")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_for(lambda: len(self.committed) > 5, 10, "the writer to commit")
        return self

    def _run(self) -> None:
        node, svc, password = self._leader()
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
