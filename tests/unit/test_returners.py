"""Returners: documents, the on-disk queue, the Elasticsearch returner against the stand-in
(the official client's bulk helper over real HTTP), the PostgreSQL returner against a real
server, the worker's back-off and the registry's errors."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest

from master.metrics import MasterMetrics
from master.returners.base import Doc, Unavailable, event_docs, return_doc
from master.returners.config import ReturnerConfig
from master.returners.elasticsearch import ElasticsearchReturner
from master.returners.postgresql import PostgresReturner
from master.returners.pump import Worker
from master.returners.queue import DiskQueue
from master.returners.registry import BUILTINS, build
from master.store.base import EventRecord, ReturnRecord
from saline.errors import ConfigError
from saline.lab.es_standin import EsStandin
from saline.lab.lab import free_port
from tests.support import wait_for


@pytest.fixture
def es() -> Iterator[tuple[EsStandin, int]]:
    standin = EsStandin(version="9.1.0")
    _, port = standin.start("127.0.0.1", free_port())
    try:
        yield standin, port
    finally:
        standin.stop()


def _docs(n: int, start: int = 1) -> list[Doc]:
    return [
        d
        for seq in range(start, start + n)
        for d in event_docs(EventRecord("test/x", {"n": seq}, "be1", 1.7e9, seq=seq))
    ]


def test_documents_use_ecs_names_and_stable_ids() -> None:
    [event] = event_docs(EventRecord("saline/beacon/be1/pg/down", {"a": 1}, "be1", 0.0, seq=7))
    assert event.id == "7" and event.body["host"] == {"name": "be1"}
    assert event.body["@timestamp"] == "1970-01-01T00:00:00.000Z"
    audit = EventRecord(
        "saline/reactor/fix/fired", {"verdict": "fire", "reason": "ok"}, None, 0.0, seq=9, cause=7
    )
    docs = event_docs(audit)
    assert [d.kind for d in docs] == ["events", "reactions"]
    assert docs[1].body["saline"]["verdict"] == "fire" and docs[1].body["saline"]["event_seq"] == 7
    ret = return_doc(ReturnRecord("j1", "be1", "cmd.run", False, 2, b"\x00", 1.5, 0.0))
    assert ret.id == "j1:be1" and ret.body["event"]["outcome"] == "failure"
    assert ret.body["event"]["duration"] == 1_500_000 and "base64" in ret.body["saline"]["ret"]
    assert event_docs(EventRecord("x", {}, None, 0.0)) == [], "an unstored event has no id yet"


def test_the_disk_queue_is_bounded_keeps_the_newest_and_survives_a_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q"
    queue = DiskQueue(path, max_docs=100)
    assert path.stat().st_mode & 0o777 == 0o600
    assert queue.put(_docs(150)) == 50
    assert queue.depth == 100
    rows = queue.peek(10)
    assert rows[0][1].id == "51", "the oldest were dropped"
    queue.remove([r for r, _ in rows])
    queue.close()
    again = DiskQueue(path, max_docs=100)
    assert again.depth == 90 and again.peek(1)[0][1].id == "61"


def test_elasticsearch_stores_each_document_once_even_when_sent_twice(
    es: tuple[EsStandin, int],
) -> None:
    standin, port = es
    returner = ElasticsearchReturner("es", [f"http://127.0.0.1:{port}"])
    docs = [*_docs(20), return_doc(ReturnRecord("j1", "be1", "test.ping", True, 0, True, 3, 0))]
    first = returner.ship(docs)
    assert sorted(first.done) == sorted(d.id for d in docs) and not first.refused
    again = returner.ship(docs)  # an answer lost: the whole batch again
    assert sorted(again.done) == sorted(d.id for d in docs), "409 conflicts count as stored"
    stored = standin.documents
    assert (
        len(stored.indices["saline-events"]) == 20 and "j1:be1" in stored.indices["saline-returns"]
    )
    assert set(stored.writes.values()) == {1}, "no document was written twice"
    assert stored.templates["saline"]["index_patterns"] == ["saline-*"]
    returner.close()


def test_a_document_elasticsearch_never_takes_is_refused_not_retried(
    es: tuple[EsStandin, int],
) -> None:
    _, port = es
    returner = ElasticsearchReturner("es", [f"http://127.0.0.1:{port}"], index_prefix="Bad")
    shipped = returner.ship(_docs(2))
    assert not shipped.done and set(shipped.refused) == {"1", "2"}
    assert "invalid_index_name" in next(iter(shipped.refused.values())) or "lowercase" in str(
        shipped.refused
    )


def test_elasticsearch_away_is_unavailable() -> None:
    returner = ElasticsearchReturner("es", [f"http://127.0.0.1:{free_port()}"], timeout=1)
    with pytest.raises(Unavailable, match="Elasticsearch"):
        returner.ship(_docs(1))


def test_the_worker_holds_documents_while_elasticsearch_is_down_then_ships_each_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    standin = EsStandin(version="9.1.0")
    returner = ElasticsearchReturner("es", [f"http://127.0.0.1:{port}"], timeout=1)
    metrics = MasterMetrics()
    worker = Worker(
        returner,
        DiskQueue(tmp_path / "q", 10_000),
        frozenset({"events", "returns", "reactions"}),
        50,
        metrics,
    )
    worker.start()
    try:
        worker.offer(_docs(120))
        wait_for(lambda: worker.last_error is not None, 10, "the worker to find ES away")
        wait_for(lambda: worker.status()["queued"] == 120, 10, "all 120 queued on disk")
        standin.start("127.0.0.1", port)
        worker.offer(_docs(30, start=121))
        wait_for(lambda: worker.status()["queued"] == 0, 30, "the queue drained")
        events = standin.documents.indices["saline-events"]
        assert sorted(int(i) for i in events) == list(range(1, 151))
        assert set(standin.documents.writes.values()) == {1}
        assert worker.last_error is None and worker.shipped == 150
        sample = metrics.registry.get_sample_value(
            "saline_returner_shipped_total", {"returner": "es", "kind": "events"}
        )
        assert sample == 150
    finally:
        worker.stop()
        standin.stop()


def test_postgresql_returner_stores_once_in_the_operators_database(pg_dsn: str) -> None:
    returner = PostgresReturner("db", pg_dsn, table_prefix="saline_ret_test")
    docs = [*_docs(5), return_doc(ReturnRecord("j9", "fe1", "test.ping", True, 0, True, 1, 0))]
    try:
        assert len(returner.ship(docs).done) == 6
        assert len(returner.ship(docs).done) == 6  # again: nothing twice
        conn = psycopg2.connect(pg_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM saline_ret_test_events")
                assert cur.fetchone() == (5,)
                cur.execute("SELECT doc->'saline'->>'fun' FROM saline_ret_test_returns")
                assert cur.fetchall() == [("test.ping",)]
                for kind in ("events", "returns", "reactions"):
                    cur.execute(f"DROP TABLE saline_ret_test_{kind}")
            conn.commit()
        finally:
            conn.close()
    finally:
        returner.close()
    away = PostgresReturner("db", f"postgresql://x@127.0.0.1:{free_port()}/x")
    with pytest.raises(Unavailable, match="PostgreSQL"):
        away.ship(docs)


def test_the_registry_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown kind 'splunk'.*elasticsearch"):
        build(ReturnerConfig(name="x", kind="splunk"), BUILTINS)
    with pytest.raises(ConfigError, match="returner x: hosts"):
        build(ReturnerConfig(name="x", kind="elasticsearch"), BUILTINS)
    with pytest.raises(ConfigError, match="index_prefix"):
        build(ReturnerConfig.model_validate({"name": "x", "kind": "elasticsearch",
                                             "hosts": ["http://h:9200"], "index_prefix": "A"}),
              BUILTINS)  # fmt: skip
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://u:pw@h/db")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"dsn: the secret file .* is open to others"):
        build(
            ReturnerConfig.model_validate({"name": "x", "kind": "postgresql", "dsn": str(secret)}),
            BUILTINS,
        )


def test_a_plugin_returner_is_built_from_its_factory() -> None:
    made: dict[str, Any] = {}

    class Fake:
        name = "mine"

        def ship(self, docs: list[Doc]) -> Any:
            raise Unavailable("never")

        def close(self) -> None:
            pass

    def factory(name: str, settings: Any) -> Fake:
        made.update(settings)
        return Fake()

    returner = build(
        ReturnerConfig.model_validate({"name": "mine", "kind": "acme", "region": "eu"}),
        {**BUILTINS, "acme": factory},
    )
    assert returner.name == "mine" and made == {"region": "eu"}
